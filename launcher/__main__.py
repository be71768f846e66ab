"""`python -m launcher` is `sft-launch`."""

from launcher.cli import main

main()
