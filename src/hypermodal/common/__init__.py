"""Plumbing shared by every stage: errors, atomic files, the rejects file, progress, engines."""
