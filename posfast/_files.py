"""Side files written beside a journal (index, archive segments, manifest): never through a
planted symlink, never into a file someone else created."""
import os

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def open_new(path: str):
    """A binary file object on a freshly created `path` (a temp file, renamed into place
    after): whatever was there (a stale temp file from a crash, or a symlink planted to make
    posfast overwrite its target) is unlinked first, never followed."""
    try:
        os.unlink(path)                  # removes a symlink itself, not what it points to
    except FileNotFoundError:
        pass
    return os.fdopen(os.open(path, _NEW, 0o644), "wb")
