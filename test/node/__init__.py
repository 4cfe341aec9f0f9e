# A package, so that test/node/conftest.py is imported as node.conftest and leaves the name
# `conftest` to test/conftest.py, which tests import shared configs from.
