"""Files tunesmith writes and reads back: checkpoint folders, model directories, run folders,
manifests with sha256, and the atomic write / link-or-copy / folder-swap helpers every writer uses."""
