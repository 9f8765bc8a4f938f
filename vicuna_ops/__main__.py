"""``python -m vicuna_ops`` is ``vops``."""

from vicuna_ops.cli.app import console_main

console_main()
