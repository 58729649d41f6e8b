"""What a rule is (the catalogue) and what a verdict is (the record)."""
