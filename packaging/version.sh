#!/bin/sh
# Prints etrnflush's version for the binary and the Debian package, from
# the nearest tag vX.Y.Z (git describe):
#   on the tag                  X.Y.Z
#   N commits after it          X.Y.Z+N.gHASH
#   no vX.Y.Z tag in the clone  0.0.0+git.N.gHASH (N: commits in HEAD)
#   outside a git checkout      0.0.0+unknown
# with ".dirty" appended when the work tree has changes. Every form is a
# valid Debian version that sorts after the tag it follows.
set -u
d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null)
if [ -n "$d" ]; then
	# v1.2.3[-N-gHASH][-dirty]
	echo "$d" | sed -e 's/^v//' -e 's/-\([0-9][0-9]*\)-g\([0-9a-f]*\)/+\1.g\2/' -e 's/-dirty$/.dirty/'
	exit 0
fi
if hash=$(git rev-parse --short HEAD 2>/dev/null); then
	n=$(git rev-list --count HEAD)
	dirty=
	if ! git diff-index --quiet HEAD -- 2>/dev/null; then
		dirty=.dirty
	fi
	echo "0.0.0+git.$n.g$hash$dirty"
	exit 0
fi
echo "0.0.0+unknown"
