/* Thin file I/O shim so the core compiles on POSIX and Windows alike.
 * Every call returns -1 on failure with the reason in pf_errno(). */
#ifndef PF_IO_H
#define PF_IO_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <errno.h>

#ifdef _WIN32
#include <windows.h>
#include <io.h>
#include <fcntl.h>
#include <sys/stat.h>

static inline int pf_errno(void) { return errno; }
static inline int pf_open(const char *path, int writable, int create) {
    int flags = (writable ? _O_RDWR : _O_RDONLY) | _O_BINARY | (create ? (_O_CREAT | _O_EXCL) : 0);
    return _open(path, flags, _S_IREAD | _S_IWRITE);
}
static inline int pf_close(int fd) { return _close(fd); }
static inline long long pf_pwrite(int fd, const void *buf, size_t len, uint64_t off) {
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    OVERLAPPED ov = {0};
    DWORD done = 0;
    ov.Offset = (DWORD)off; ov.OffsetHigh = (DWORD)(off >> 32);
    if (!WriteFile(h, buf, (DWORD)len, &done, &ov)) { errno = EIO; return -1; }
    return (long long)done;
}
static inline long long pf_pread(int fd, void *buf, size_t len, uint64_t off) {
    HANDLE h = (HANDLE)_get_osfhandle(fd);
    OVERLAPPED ov = {0};
    DWORD done = 0;
    ov.Offset = (DWORD)off; ov.OffsetHigh = (DWORD)(off >> 32);
    if (!ReadFile(h, buf, (DWORD)len, &done, &ov)) {
        if (GetLastError() == ERROR_HANDLE_EOF) return 0;
        errno = EIO; return -1;
    }
    return (long long)done;
}
static inline int pf_datasync(int fd) {
    if (!FlushFileBuffers((HANDLE)_get_osfhandle(fd))) { errno = EIO; return -1; }
    return 0;
}
static inline int pf_fullsync(int fd) { return pf_datasync(fd); }
static inline int pf_allocate(int fd, uint64_t size) {
    if (_chsize_s(fd, (__int64)size) != 0) return -1;
    return 0;
}
/* _chsize_s extends the file by writing the zeros itself: nothing left to do here. */
static inline int pf_zero_fill(int fd, uint64_t off, uint64_t end) {
    (void)fd; (void)off; (void)end;
    return 0;
}
static inline long long pf_file_size(int fd) { return (long long)_filelengthi64(fd); }
static inline void *pf_map(int fd, size_t len) {
    HANDLE fm = CreateFileMappingA((HANDLE)_get_osfhandle(fd), NULL, PAGE_READONLY, 0, 0, NULL);
    void *p;
    if (fm == NULL) { errno = EIO; return NULL; }
    p = MapViewOfFile(fm, FILE_MAP_READ, 0, 0, len);
    CloseHandle(fm);
    if (p == NULL) errno = ENOMEM;
    return p;
}
static inline int pf_unmap(void *addr, size_t len) { (void)len; return UnmapViewOfFile(addr) ? 0 : -1; }
static inline int pf_sync_dir(const char *dirpath) { (void)dirpath; return 0; } /* NTFS journals directory entries */
/* The writer lock belongs to the file itself: a byte-range lock far past any data, so readers
 * are never blocked, taken on the very handle the writer writes through. */
static inline int pf_lock_writer(int fd) {
    OVERLAPPED ov = {0};
    ov.Offset = 0; ov.OffsetHigh = 0x7FFFFFFF;
    if (!LockFileEx((HANDLE)_get_osfhandle(fd), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
                    0, 1, 0, &ov)) { errno = EWOULDBLOCK; return -1; }
    return 0;
}

#else
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/file.h>

/* File offsets are u64 on disk: a 32-bit off_t (32-bit glibc without _FILE_OFFSET_BITS=64,
 * which setup.py and Python's pyconfig.h set) would cut every pread/pwrite offset and the
 * size fstat reports at 2 GiB.  Refuse to build that way rather than corrupt a journal. */
typedef char pf_off_t_is_64_bits[sizeof(off_t) >= 8 ? 1 : -1];

static inline int pf_errno(void) { return errno; }
static inline int pf_open(const char *path, int writable, int create) {
    int flags = (writable ? O_RDWR : O_RDONLY) | (create ? (O_CREAT | O_EXCL) : 0);
#ifdef O_CLOEXEC
    flags |= O_CLOEXEC;
#endif
    return open(path, flags, 0644);
}
static inline int pf_close(int fd) { return close(fd); }
static inline long long pf_pwrite(int fd, const void *buf, size_t len, uint64_t off) {
    ssize_t r;
    do { r = pwrite(fd, buf, len, (off_t)off); } while (r < 0 && errno == EINTR);
    return (long long)r;
}
static inline long long pf_pread(int fd, void *buf, size_t len, uint64_t off) {
    ssize_t r;
    do { r = pread(fd, buf, len, (off_t)off); } while (r < 0 && errno == EINTR);
    return (long long)r;
}
static inline int pf_datasync(int fd) {
#if defined(__APPLE__)
    /* macOS fsync does not flush the drive cache; F_FULLFSYNC does. */
    if (fcntl(fd, F_FULLFSYNC) == 0) return 0;
    return fsync(fd);
#elif defined(_POSIX_SYNCHRONIZED_IO) && _POSIX_SYNCHRONIZED_IO > 0
    return fdatasync(fd);
#else
    return fsync(fd);
#endif
}
static inline int pf_fullsync(int fd) {
#if defined(__APPLE__)
    if (fcntl(fd, F_FULLFSYNC) == 0) return 0;
#endif
    return fsync(fd);
}
static inline int pf_allocate(int fd, uint64_t size) {
#if defined(__linux__)
    int r = posix_fallocate(fd, 0, (off_t)size);
    if (r == 0) return 0;
    if (r != EOPNOTSUPP && r != EINVAL) { errno = r; return -1; }
#endif
    /* No fallocate (tmpfs on old kernels, macOS): extend; the hole reads as zeros. */
    if (ftruncate(fd, (off_t)size) != 0) return -1;
    return 0;
}
/* Write zeros over [off, end) of a file pf_allocate sized.  posix_fallocate reserves the
 * blocks but leaves them as unwritten extents (ext4, XFS): the first write into each block
 * then converts its extent, and the fdatasync after it must commit that metadata change
 * through the file-system journal too -- about twice the cost of a sync of data alone.
 * Written once at create, every later append is a plain overwrite of allocated, written
 * blocks (and with fallocate first, ENOSPC still shows up before a byte is written). */
#define PF_ZERO_CHUNK ((size_t)1 << 20)
static inline int pf_zero_fill(int fd, uint64_t off, uint64_t end) {
    long long r;
    size_t chunk;
    int err;
    void *zeros = calloc(1, PF_ZERO_CHUNK);
    if (zeros == NULL) { errno = ENOMEM; return -1; }
    while (off < end) {
        chunk = end - off < (uint64_t)PF_ZERO_CHUNK ? (size_t)(end - off) : PF_ZERO_CHUNK;
        r = pf_pwrite(fd, zeros, chunk, off);
        if (r <= 0) {          /* a write of 0 bytes into a regular file: out of space */
            err = r < 0 ? errno : ENOSPC;
            free(zeros);
            errno = err;
            return -1;
        }
        off += (uint64_t)r;    /* a short write is continued */
    }
    free(zeros);
    return 0;
}
static inline long long pf_file_size(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    return (long long)st.st_size;
}
static inline void *pf_map(int fd, size_t len) {
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}
static inline int pf_unmap(void *addr, size_t len) { return munmap(addr, len); }
static inline int pf_sync_dir(const char *dirpath) {
    int r, fd = open(dirpath, O_RDONLY);
    if (fd < 0) return -1;
    r = fsync(fd);
    close(fd);
    return r;
}
/* The writer lock belongs to the file itself (its inode), not to a name: no symlink, hard link,
 * bind mount or deleted side file can make a second writer.  flock() locks an open file
 * description, so a second open in the same process conflicts too, and closing another
 * descriptor of the file (a reader) does not drop it, as a POSIX record lock would. */
static inline int pf_lock_writer(int fd) {
    int r;
    do { r = flock(fd, LOCK_EX | LOCK_NB); } while (r < 0 && errno == EINTR);
    return r;
}
#endif
#endif
