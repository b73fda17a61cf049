"""The client/admin API (`Client`) and the producer (`Producer`)."""
