"""Where the data lives: Delta tables read at pinned versions and written atomically, versioned files."""
