"""Adopting gating in an existing repository: what `gating init` finds and writes, and the promptfoo
importer. Pure functions of file names and bytes; the command in gating/commands/init.py does the I/O."""
