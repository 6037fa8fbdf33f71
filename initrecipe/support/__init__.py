"""Small helpers every stage may use: text for people, atomic files, GC pauses, huge pages."""
