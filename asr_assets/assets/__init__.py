"""Thin Dagster assets, one module per stage.

Each module holds a plain `build_*` function that does the stage's work against resource
interfaces (so tools and tests run exactly the code the assets run) and the `@dg.asset` that
adapts it to Dagster: partition keys in, metadata out.
"""
