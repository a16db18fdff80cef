"""Pretraining: token shards, packing and the data loader (and, next to them, the training loop).

Import the submodules directly; this package imports nothing, so token_shards never pulls in torch.
"""
