"""The files ``gdn2 course start DIR`` copies into the student's folder (every body raises NotImplementedError)."""
