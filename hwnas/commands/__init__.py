"""The CLI's subcommands, one module per area (``lut``, ``nas``, ``agent``, ``quantize``, ``train``).

Only this package (and `hwnas.cli`, which mounts it) imports typer and rich; the libraries below it report
progress through callbacks and raise `supernet.errors.InputError` for bad input.
"""
