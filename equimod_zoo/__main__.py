"""`python -m equimod_zoo` runs the `equimod-zoo` command line."""
from equimod_zoo.cli import main

main()
