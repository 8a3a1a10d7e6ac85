#!/bin/sh
# Does nothing: a command for configuration tests that must exist.
exit 0
