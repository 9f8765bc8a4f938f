"""``python -m vicuna_ops`` is ``vops``."""

from vicuna_ops.cli.app import main

main()
