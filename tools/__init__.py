"""Developer tools run from the repository: make demo and the private ROS graph for tests."""
