"""The operators' use-cases (status, check, history, unlock, pause, demo, the email queue's view): each
reads or changes the tool's state through the framework and returns values the CLI renders."""
