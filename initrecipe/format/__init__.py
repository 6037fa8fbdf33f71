"""The Recipe object and its msgpack file format (schema/FORMAT.md)."""
