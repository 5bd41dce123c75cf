"""Other tools' checkpoints: read without executing code, mapped onto targetkl's modules."""
