"""The platform around the pipeline: command line, and later the jobs API, registry and tenancy."""
