"""`python -m adcli ...`: the same command line as the installed `adcli` script. (Run as
`python -m adcli.cli`, that module would be loaded twice, and the commands registered on
the imported copy, show, trace, graph and calibrate among them, would be missing.)"""
from adcli.cli import main

main()
