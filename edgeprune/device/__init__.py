"""Everything that runs on the device. Imports without torch: a Jetson image need not carry it."""
