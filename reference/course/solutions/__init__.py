"""One solution per exercise, for instructors and CI (``gdn2 course check-solutions``); never copied to students."""
