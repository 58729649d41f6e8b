"""kvmio's own files, read and written the same way everywhere: atomic writes, YAML documents against a schema,
the ini file pytest reads."""
