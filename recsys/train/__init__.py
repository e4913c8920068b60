"""Distributed training: the Petastorm reader, process-group helpers, sparse id tables and their
gradient exchange, the training loop and the train job."""
