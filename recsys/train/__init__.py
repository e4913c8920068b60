"""Distributed training: Petastorm reader, DDP helpers, the training loop and the train job."""
