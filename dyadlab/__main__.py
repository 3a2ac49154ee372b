"""``python -m dyadlab``: the ``dyadlab`` command line."""

from dyadlab.protocols.cli import main

main()
