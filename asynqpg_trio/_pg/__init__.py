"""The data edge: the trio/anyio-native driver and pool, SQL files and their loader, the
repositories (one function per query), migrations and the embedded server."""
