"""The installed commands of the training package (setup.py console_scripts): each module
parses arguments, calls the modules below and turns their errors into one line and an exit
status (2 for a user's mistake, 130 for Ctrl-C), never a traceback."""
