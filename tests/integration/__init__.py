"""Integration tests across separate network hosts (Linux network namespaces): issue #17."""
