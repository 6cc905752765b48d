"""The files `ichbench plugin new` writes, as strings so that they ship in every install."""
