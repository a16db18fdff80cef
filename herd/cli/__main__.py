"""`python -m herd.cli` (and `torchrun ... -m herd.cli`): the `herd` command."""

from herd.cli import main

main()
