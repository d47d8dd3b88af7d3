"""Controllers playing the systems the lab cannot run: one small file each."""
