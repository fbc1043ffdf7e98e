"""Train the demo letter model: a small Wav2Vec2-BERT CTC model from scratch on espeak-ng speech.

Run ``python -m tools.train --help``. The recipe, measurements behind each choice and the results
are in ``models/demo-letters/MODEL_CARD.md``.
"""
