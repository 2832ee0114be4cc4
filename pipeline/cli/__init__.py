"""The ``diffsweep`` command line: thin click commands over the library."""
