"""The reviewers' queue: claiming items with leases, deciding, undoing, consensus."""
