"""Persistence: where PostgreSQL comes from, the events recorder and every override of the library's internals."""
