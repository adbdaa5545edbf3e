"""Google Cloud access: one client factory, one error seam, the three APIs the guard uses."""
