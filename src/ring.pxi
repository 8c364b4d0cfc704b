# The ring file: header, append (group commit), recovery walk, gather, verify.
#
# Invariants (see DESIGN.md): seq 1, 2, 3... without gaps; position p lives in
# slot (p - 1) % capacity; every record's CRC32C covers the journal id, so a
# record from another journal or an earlier lap never passes as current; the
# newest commit group is the only place a torn write can be, so damage anywhere
# else is reported, never truncated away.

import os as _os
import errno as _errno

RETENTION_SYNCED = 0
RETENTION_OVERWRITE = 1
RETENTION_ARCHIVE = 2
DURABILITY_NONE = 0
DURABILITY_BATCH = 1
DURABILITY_FSYNC = 2

# A commit group (records written between two syncs) is at most this many slots,
# which bounds both the write buffer and how far a torn tail can reach.
DEF GROUP_SLOTS_MAX = 65536
DEF READ_AHEAD = 16         # records prefetched ahead in read_rows
DEF SCAN_CHUNK_BYTES = 1048576   # one pread of a whole-file scan

# Outcome codes of _check_at (also the verify causes).
DEF CHK_OK = 0
DEF CHK_NOT_HEAD = 1      # no record head at this position (zeros, payload bytes, another lap)
DEF CHK_CRC = 2           # head found but checksum fails
DEF CHK_LENGTH = 3        # payload length beyond the journal's limit
DEF CHK_OUTSIDE = 4       # slot lies beyond the end of a truncated file
DEF CHK_STALE = 5         # a valid record, but of another seq (earlier lap)
DEF CHK_CHAIN = 6         # checksum fine but the hash chain does not follow
DEF CHK_MISSING = 7       # seq known to be lost since recovery
DEF CHK_CONFLICT = 8      # a valid record no single writer could have left (two writers, edits)
DEF CHK_GROUP = 9         # commit-group offsets that do not follow on
DEF CHK_FILTER = 10       # read_rows: a valid record, but not of the day/terminal/kind asked

# verify() problem codes, for callers that sort findings (Problem.code)
CHK_CRC_MISMATCH, CHK_CHAIN_BROKEN, CHK_LOST = CHK_CRC, CHK_CHAIN, CHK_MISSING
CHK_CONFLICTING, CHK_GROUP_ORDER = CHK_CONFLICT, CHK_GROUP
CHK_NOT_FILTERED = CHK_FILTER

CAUSES = {
    CHK_NOT_HEAD: "no record head where the seq should start (overwritten or zeroed)",
    CHK_CRC: "checksum mismatch (bytes changed on disk)",
    CHK_LENGTH: "payload length field out of range",
    CHK_OUTSIDE: "slot lies beyond the end of the file (file truncated)",
    CHK_STALE: "stale record from an earlier lap of the ring",
    CHK_CHAIN: "hash chain broken (record edited, inserted or removed after it was written)",
    CHK_MISSING: "record lost: found damaged when the journal was opened",
    CHK_CONFLICT: "conflicting record (written by a second writer, or the file was edited or "
                  "restored over a newer copy)",
    CHK_GROUP: "commit group out of order (records of two writers interleaved, or edited)",
    CHK_FILTER: "not of the day, terminal or kind it was looked up by (the index is wrong)",
}


def _writer_of(int fd):
    """Who holds the writer lock of the file open on `fd`: "process N" (Linux reads it from
    /proc/locks by the file's device and inode), or "another process or handle"."""
    try:
        st = _os.fstat(fd)
        want = (_os.major(st.st_dev), _os.minor(st.st_dev), st.st_ino)
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.replace("->", " ").split()
                if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
                    continue
                dev_major, dev_minor, ino = fields[5].split(":")
                if (int(dev_major, 16), int(dev_minor, 16), int(ino)) == want:
                    pid = int(fields[4])
                    if pid == _os.getpid():
                        return "process %d (this process, through another Journal handle)" % pid
                    return "process %d" % pid
    except (OSError, ValueError, AttributeError):
        pass
    return "another process or handle"


cdef inline uint64_t _ceil_div(uint64_t a, uint64_t b) noexcept nogil:
    return (a + b - 1) // b


cdef class Ring:
    """One open ring file.  Not thread-safe by itself: posfast.Journal locks around it."""
    cdef int fd
    cdef uint8_t *map
    cdef size_t map_len
    cdef uint64_t avail_slots          # slots backed by the file (less than capacity only if truncated)
    cdef readonly object path
    cdef readonly bint writable
    cdef readonly uint64_t capacity
    cdef readonly uint32_t slot_size, max_payload
    cdef uint8_t jid[16]
    cdef uint32_t jid_crc              # CRC32C state after the journal id, reused by every record
    cdef readonly int32_t day_offset_min, day_start_min
    cdef readonly uint32_t retention
    cdef readonly uint64_t sync_watermark, generation
    cdef readonly int64_t created_us
    cdef readonly uint64_t head_seq, oldest_seq, next_pos
    cdef uint8_t head_link[16]
    cdef uint64_t *pos_of              # position of live seq s at [(s - 1) % capacity]; 0 = damaged
    # Positions of seqs idx_first..idx_last come from the index file, mapped, not copied:
    # opening reads only the pages a lookup touches (see _pos).
    cdef const uint8_t *idx_pos        # little-endian u64 per seq from idx_first
    cdef uint64_t idx_first, idx_last
    cdef uint64_t lap_base             # a multiple of capacity near next_pos (see _slot)
    cdef object idx_owner              # keeps the mapping alive
    cdef readonly uint32_t version     # file format version (1 or 2)
    cdef readonly str tz_name          # v2: IANA zone of the day rule ("" = fixed offset)
    # v2 tail mark: no record starts at or past ckpt_pos + ckpt_window before a newer mark
    cdef readonly uint64_t ckpt_seq, ckpt_pos, ckpt_window
    cdef uint8_t ckpt_link[16]
    cdef readonly bint clean           # the header says: closed cleanly at ckpt_pos
    cdef readonly bytes index_digest   # v2: digest of the index directory the header names
    cdef readonly uint64_t index_head
    cdef readonly uint64_t recovery_slots   # slots recovery read past the walk (a figure for tests)
    cdef bint header_stale             # fields changed that the next header write carries
    cdef readonly uint64_t idx_repairs # positions of the index file found wrong (and walked to)
    cdef public int durability
    cdef public uint32_t batch_records
    cdef readonly uint64_t group_first_seq   # first seq written since the last sync, 0 if none
    cdef readonly bint failed
    cdef public object io_hook
    cdef readonly list damaged         # (seq, slot, cause) lost records found by recovery
    cdef readonly list torn            # (seq, slot) unacknowledged records dropped from the tail

    def __cinit__(self):
        self.fd = -1
        self.map = NULL
        self.pos_of = NULL
        self.idx_pos = NULL
        self.idx_owner = None
        self.idx_first = 1
        self.idx_last = 0
        self.tz_name = ""
        self.index_digest = bytes(16)
        self.damaged = []
        self.torn = []
        self.io_hook = None
        self.durability = DURABILITY_FSYNC
        self.batch_records = 64

    def __dealloc__(self):
        if self.map != NULL:
            pf_unmap(self.map, self.map_len)
        if self.fd >= 0:
            pf_close(self.fd)
        if self.pos_of != NULL:
            free(self.pos_of)

    # ----------------------------------------------------------------- I/O layer
    # Every write and sync goes through these two methods so that tests can
    # record them (power-loss images) or make them fail (EIO, ENOSPC, short writes).

    cdef int _write(self, const uint8_t *buf, size_t length, uint64_t offset) except -1:
        cdef long long r = 0
        cdef size_t done = 0, chunk
        cdef int err = 0
        while done < length:
            chunk = length - done
            if self.io_hook is not None:
                # The hook may record the write, shorten it (return a byte count)
                # or fail it (raise OSError), exactly like the kernel could.
                try:
                    want = self.io_hook("write", offset + done,
                                        PyBytes_FromStringAndSize(<const char *>buf + done, chunk))
                except OSError as e:
                    err = e.errno or _errno.EIO
                    break
                if want is not None and <size_t>want < chunk:
                    chunk = <size_t>want
            with nogil:
                r = pf_pwrite(self.fd, buf + done, chunk, offset + done)
                if r < 0:
                    err = pf_errno()
            if r < 0:
                break
            if r == 0:
                err = _errno.ENOSPC
                break
            done += <size_t>r
        if err:
            self.failed = True
            raise IOFailure(err, "posfast: write of %d bytes at offset %d of %s failed: %s; nothing "
                            "after it was acknowledged. Reopen the journal (it re-checks the file), "
                            "and free storage if the disk is full."
                            % (length, offset, self.path, _os.strerror(err)))
        return 0

    cdef int _sync(self) except -1:
        cdef int r = 0, err = 0
        if self.io_hook is not None:
            try:
                self.io_hook("sync", 0, None)
            except OSError as e:
                r = -1
                err = e.errno or _errno.EIO
        if r == 0:
            with nogil:
                r = pf_datasync(self.fd)
                if r != 0:
                    err = pf_errno()
        if r != 0:
            # A failed fsync may have dropped dirty pages: retrying could report success
            # for data that is gone.  Retire the handle; reopen re-checks from disk.
            self.failed = True
            raise IOFailure(err, "posfast: fdatasync of %s failed: %s; records since the last "
                            "successful sync are not acknowledged. Reopen the journal."
                            % (self.path, _os.strerror(err)))
        self.group_first_seq = 0
        return 0

    cdef int _usable(self) except -1:
        if self.fd < 0:
            raise JournalClosed("posfast: journal %s is closed" % (self.path,))
        if self.failed:
            raise JournalClosed("posfast: journal %s had a failed write or sync and refuses further "
                                "writes; reopen it" % (self.path,))
        if not self.writable:
            raise JournalClosed("posfast: journal %s is open read-only" % (self.path,))
        return 0

    # ------------------------------------------------------------------ header
    @staticmethod
    def encode_header(uint64_t generation, uint32_t slot_size, uint32_t max_payload,
                      uint64_t capacity, bytes journal_id, int64_t created_us,
                      int32_t day_offset_min, int32_t day_start_min, uint32_t retention,
                      uint64_t sync_watermark, uint32_t version=PF_FORMAT_VERSION, tz_name="",
                      uint64_t ckpt_seq=0, uint64_t ckpt_pos=0, uint64_t ckpt_window=0,
                      bytes ckpt_link=None, bint clean=False, bytes index_digest=None,
                      uint64_t index_head=0):
        """One header copy.  Version 2 adds the zone name, the tail mark (ckpt_*: window 0 =
        none, recovery then scans the whole ring) and the digest of the index it names."""
        cdef uint8_t h[256]   # PFH2_SIZE
        cdef int size = PFH_SIZE if version == PF_FORMAT_V1 else PFH2_SIZE
        cdef bytes tz = tz_name.encode("ascii") if isinstance(tz_name, str) else bytes(tz_name)
        if version not in (PF_FORMAT_V1, PF_FORMAT_VERSION):
            raise ValueError("format version %d: posfast writes 1 and 2" % version)
        if len(tz) > PFH2_TZ_SIZE or (tz and version == PF_FORMAT_V1):
            raise ValueError("zone name %r does not fit the header" % (tz_name,))
        memset(h, 0, PFH2_SIZE)
        memcpy(h + PFH_MAGIC, PF_MAGIC, 8)
        pf_st32(h + PFH_VERSION, version)
        pf_st32(h + PFH_HEADER_SIZE, size)
        pf_st64(h + PFH_GENERATION, generation)
        pf_st32(h + PFH_SLOT_SIZE, slot_size)
        pf_st32(h + PFH_MAX_PAYLOAD, max_payload)
        pf_st64(h + PFH_CAPACITY, capacity)
        memcpy(h + PFH_JOURNAL_ID, PyBytes_AS_STRING(journal_id), 16)
        pf_st64(h + PFH_CREATED_US, <uint64_t>created_us)
        pf_st32(h + PFH_DAY_OFFSET_MIN, <uint32_t>day_offset_min)
        pf_st32(h + PFH_DAY_START_MIN, <uint32_t>day_start_min)
        pf_st32(h + PFH_RETENTION, retention)
        pf_st64(h + PFH_SYNC_WATERMARK, sync_watermark)
        if version == PF_FORMAT_V1:
            pf_st32(h + PFH_CRC, pf_crc32c(0, h, PFH_CRC))
            return PyBytes_FromStringAndSize(<char *>h, PFH_SIZE)
        if tz:
            memcpy(h + PFH2_TZ, PyBytes_AS_STRING(tz), len(tz))
        pf_st64(h + PFH2_CKPT_SEQ, ckpt_seq)
        pf_st64(h + PFH2_CKPT_POS, ckpt_pos)
        pf_st64(h + PFH2_CKPT_WINDOW, ckpt_window)
        if ckpt_link is not None and len(ckpt_link) == 16:
            memcpy(h + PFH2_CKPT_LINK, PyBytes_AS_STRING(ckpt_link), 16)
        pf_st32(h + PFH2_CLEAN, 1 if clean else 0)
        if index_digest is not None and len(index_digest) == 16:
            memcpy(h + PFH2_INDEX_DIGEST, PyBytes_AS_STRING(index_digest), 16)
        pf_st64(h + PFH2_INDEX_HEAD, index_head)
        pf_st32(h + PFH2_CRC, pf_crc32c(0, h, PFH2_CRC))
        return PyBytes_FromStringAndSize(<char *>h, PFH2_SIZE)

    @staticmethod
    def decode_header(bytes raw):
        """Fields of one header copy, or raise FormatVersionError / CorruptRecord."""
        cdef const uint8_t *h = <const uint8_t *>PyBytes_AS_STRING(raw)
        cdef uint32_t version
        if len(raw) < PFH_SIZE or memcmp(h, PF_MAGIC, 8) != 0:
            raise FormatVersionError("not a posfast journal (no magic)")
        version = pf_ld32(h + PFH_VERSION)
        if version not in (PF_FORMAT_V1, PF_FORMAT_VERSION):
            raise FormatVersionError("format version %d, this posfast reads versions 1 and %d"
                                     % (version, PF_FORMAT_VERSION))
        if version == PF_FORMAT_V1:
            if pf_ld32(h + PFH_CRC) != pf_crc32c(0, h, PFH_CRC):
                raise CorruptRecord("header checksum mismatch")
        elif len(raw) < PFH2_SIZE or pf_ld32(h + PFH_HEADER_SIZE) != PFH2_SIZE \
                or pf_ld32(h + PFH2_CRC) != pf_crc32c(0, h, PFH2_CRC):
            raise CorruptRecord("header checksum mismatch")
        out = {
            "version": version,
            "generation": pf_ld64(h + PFH_GENERATION),
            "slot_size": pf_ld32(h + PFH_SLOT_SIZE),
            "max_payload": pf_ld32(h + PFH_MAX_PAYLOAD),
            "capacity": pf_ld64(h + PFH_CAPACITY),
            "journal_id": PyBytes_FromStringAndSize(<const char *>h + PFH_JOURNAL_ID, 16),
            "created_us": <int64_t>pf_ld64(h + PFH_CREATED_US),
            "day_offset_min": <int32_t>pf_ld32(h + PFH_DAY_OFFSET_MIN),
            "day_start_min": <int32_t>pf_ld32(h + PFH_DAY_START_MIN),
            "retention": pf_ld32(h + PFH_RETENTION),
            "sync_watermark": pf_ld64(h + PFH_SYNC_WATERMARK),
            "tz_name": "", "ckpt_seq": 0, "ckpt_pos": 0, "ckpt_window": 0,
            "ckpt_link": bytes(16), "clean": False, "index_digest": bytes(16), "index_head": 0,
        }
        if version >= 2:
            tz = PyBytes_FromStringAndSize(<const char *>h + PFH2_TZ, PFH2_TZ_SIZE).rstrip(b"\0")
            try:
                out["tz_name"] = tz.decode("ascii")
            except UnicodeDecodeError:
                raise CorruptRecord("header holds a zone name that is not ASCII: %r" % (tz,))
            out.update(ckpt_seq=pf_ld64(h + PFH2_CKPT_SEQ), ckpt_pos=pf_ld64(h + PFH2_CKPT_POS),
                       ckpt_window=pf_ld64(h + PFH2_CKPT_WINDOW),
                       ckpt_link=PyBytes_FromStringAndSize(<const char *>h + PFH2_CKPT_LINK, 16),
                       clean=pf_ld32(h + PFH2_CLEAN) == 1,
                       index_digest=PyBytes_FromStringAndSize(<const char *>h + PFH2_INDEX_DIGEST, 16),
                       index_head=pf_ld64(h + PFH2_INDEX_HEAD))
        return out

    cdef bytes _header_now(self, uint64_t generation, uint64_t watermark):
        return Ring.encode_header(generation, self.slot_size, self.max_payload, self.capacity,
                                  bytes(self.jid[:16]), self.created_us, self.day_offset_min,
                                  self.day_start_min, self.retention, watermark, self.version,
                                  self.tz_name, self.ckpt_seq, self.ckpt_pos, self.ckpt_window,
                                  bytes(self.ckpt_link[:16]), self.clean, self.index_digest,
                                  self.index_head)

    cdef int _write_header(self, uint64_t watermark) except -1:
        # v1: both copies, each synced before the next is touched.  v2: only the older copy,
        # then one sync; the newer copy stays as it was.  Either way a crash leaves at least
        # one valid copy, holding the old or the new state (the newest valid copy wins).
        cdef bytes raw
        cdef int i, first = <int>((self.generation + 1) % 2)
        self._usable()
        if self.group_first_seq:
            # Records written but not yet synced first: otherwise the header could reach the
            # disk before them and a crash leave a watermark above the newest record.
            self._sync()
        raw = self._header_now(self.generation + 1, watermark)
        for i in range(2 if self.version == PF_FORMAT_V1 else 1):
            self._write(<const uint8_t *>PyBytes_AS_STRING(raw), len(raw),
                        <uint64_t>((first + i) % 2) * PF_HEADER_COPY_SIZE)
            self._sync()
        self.generation += 1
        self.sync_watermark = watermark
        self.header_stale = False
        return 0

    cdef int _mark_tail(self, bint clean) except -1:
        # v2 tail mark: from here the writer may fill ckpt_window slots before the next mark,
        # so recovery after a crash reads those slots, not the ring (clean: none at all).
        self.ckpt_seq = self.head_seq
        self.ckpt_pos = self.next_pos
        self.ckpt_window = min(<uint64_t>PF_CKPT_WINDOW, self.capacity)
        memcpy(self.ckpt_link, self.head_link, 16)
        self.clean = clean
        self._write_header(self.sync_watermark)
        return 0

    def name_index(self, bytes digest, uint64_t index_head, bint write=True):
        """v2: durably name the index file just saved (its directory digest), so the next
        open can use it without re-checking every bitmap (`write` False: the next header
        write, such as the clean mark of close(), carries it)."""
        if self.version < 2 or len(digest) != 16:
            return
        self.index_digest = digest
        self.index_head = index_head
        if write:
            self._write_header(self.sync_watermark)
        else:
            self.header_stale = True

    def set_sync_watermark(self, uint64_t seq):
        """Durably record that the back office holds every record up to `seq`."""
        if seq < self.sync_watermark:
            raise ValueError("posfast: the sync watermark of %s only moves forward (%d < %d)"
                             % (self.path, seq, self.sync_watermark))
        if seq > self.head_seq:
            raise ValueError("posfast: cannot acknowledge seq %d of %s: the newest record is %d"
                             % (seq, self.path, self.head_seq))
        if seq != self.sync_watermark:
            self._write_header(seq)

    # ------------------------------------------------------------ create / open
    @staticmethod
    def create(path, uint64_t capacity, uint32_t slot_size, uint32_t max_payload,
               bytes journal_id, int64_t created_us, int32_t day_offset_min,
               int32_t day_start_min, uint32_t retention, uint32_t version=PF_FORMAT_VERSION,
               tz_name=""):
        """Create the file at full size, zero-filled, write both header copies, fsync file and directory."""
        cdef bytes bpath = _os.fsencode(path)
        cdef int fd, r
        cdef size_t done
        cdef uint64_t size = PF_DATA_OFFSET + capacity * slot_size
        cdef bytes raw
        fd = pf_open(bpath, 1, 1)
        if fd < 0:
            err = pf_errno()
            if err == _errno.EEXIST:
                raise JournalExists(err, "posfast: cannot create journal %s: %s (open it with "
                                    "Journal.open, or choose a new path)" % (path, _os.strerror(err)))
            # OSError(errno, ...) is the errno's own subclass (PermissionError, ...), as before
            raise OSError(err, "posfast: cannot create journal %s: %s" % (path, _os.strerror(err)))
        try:
            with nogil:
                r = pf_allocate(fd, size)
            if r != 0:
                err = pf_errno()
                raise IOFailure(err, "posfast: cannot allocate %d bytes for %s: %s; choose a smaller "
                                "capacity or free storage" % (size, path, _os.strerror(err)))
            for copy in range(2):
                # (v2: an empty journal, closed cleanly: nothing at or past position 1)
                raw = Ring.encode_header(copy, slot_size, max_payload, capacity, journal_id,
                                         created_us, day_offset_min, day_start_min, retention, 0,
                                         version, tz_name, 0, 1,
                                         min(<uint64_t>PF_CKPT_WINDOW, capacity),
                                         genesis_link(journal_id), True)
                done = 0
                while done < <size_t>len(raw):       # a short write is continued, as in _write
                    r = <int>pf_pwrite(fd, PyBytes_AS_STRING(raw) + done, len(raw) - done,
                                       copy * PF_HEADER_COPY_SIZE + done)
                    if r <= 0:
                        err = pf_errno() if r < 0 else _errno.ENOSPC
                        raise IOFailure(err, "posfast: cannot write the header of %s: %s"
                                        % (path, _os.strerror(err)))
                    done += <size_t>r
            # Write the zeros too (after the headers, so that a failed header write still
            # reads as one): fallocate's blocks are unwritten extents, and an append that
            # is the first write into a block would pay an extent conversion in its fdatasync.
            with nogil:
                r = pf_zero_fill(fd, PF_DATA_OFFSET, size)
            if r != 0:
                err = pf_errno()
                raise IOFailure(err, "posfast: cannot write the %d zero-filled bytes of %s: %s; "
                                "choose a smaller capacity or free storage"
                                % (size - PF_DATA_OFFSET, path, _os.strerror(err)))
            if pf_fullsync(fd) != 0:
                raise IOFailure(pf_errno(), "posfast: cannot sync new journal %s" % (path,))
        except BaseException:
            pf_close(fd)
            try:
                _os.unlink(path)
            except OSError:
                pass
            raise
        pf_close(fd)
        pf_sync_dir(_os.fsencode(_os.path.dirname(_os.path.abspath(path))))

    @staticmethod
    def open(path, bint writable):
        """Open and map the file; the caller runs recovery (recover_from / recover_scan) next."""
        cdef Ring self = Ring.__new__(Ring)
        cdef bytes bpath = _os.fsencode(path)
        cdef uint8_t buf[256]   # PFH2_SIZE
        cdef long long size, expected, got
        self.path = path
        self.writable = writable
        self.fd = pf_open(bpath, writable, 0)
        if self.fd < 0:
            err = pf_errno()
            if err == _errno.ENOENT:
                raise JournalNotFound(err, "posfast: no journal at %s (create it with "
                                      "Journal.create or `posfast demo`)" % (path,))
            raise OSError(err, "posfast: cannot open journal %s: %s" % (path, _os.strerror(err)))
        if writable and pf_lock_writer(self.fd) != 0:
            # before a single byte is written: the loser of two writers leaves the file as it was
            err = pf_errno()
            holder = _writer_of(self.fd)
            pf_close(self.fd)
            self.fd = -1
            if err not in (_errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EACCES):
                raise OSError(err, "posfast: cannot lock journal %s for writing: %s"
                              % (path, _os.strerror(err)))
            raise JournalLocked("posfast: journal %s is open for writing by %s; close it there (or stop "
                                "the posfast agent), or open with readonly=True to read"
                                % (path, holder))
        size = pf_file_size(self.fd)
        best = None
        problems = []
        for copy in range(2):
            got = pf_pread(self.fd, buf, PFH2_SIZE, copy * PF_HEADER_COPY_SIZE)
            if got < PFH_SIZE:
                problems.append("copy %d: unreadable (file too short)" % copy)
                continue
            try:
                h = Ring.decode_header(PyBytes_FromStringAndSize(<char *>buf, got))
            except FormatVersionError as e:
                problems.append("copy %d: %s" % (copy, e))
                continue
            except CorruptRecord as e:
                problems.append("copy %d: %s" % (copy, e))
                continue
            if best is None or h["generation"] > best["generation"]:
                best = h
        if best is None:
            if all("no magic" in p or "unreadable" in p for p in problems):
                raise FormatVersionError("posfast: %s is not a posfast journal (%s)"
                                         % (path, "; ".join(problems)))
            if any("format version" in p for p in problems):
                raise FormatVersionError("posfast: %s: %s; upgrade posfast to read it"
                                         % (path, "; ".join(problems)))
            raise CorruptRecord("posfast: both header copies of %s are damaged (%s); restore the "
                                "file from a backup or the back office" % (path, "; ".join(problems)))
        if not (PF_MIN_SLOT <= best["slot_size"] <= PF_MAX_SLOT) or best["capacity"] < 2 \
                or best["max_payload"] > PF_MAX_PAYLOAD \
                or best["capacity"] > (1 << 40) // best["slot_size"]:
            raise CorruptRecord("posfast: header of %s holds impossible sizes (slot %d, capacity %d, "
                                "payload %d)" % (path, best["slot_size"], best["capacity"],
                                                 best["max_payload"]))
        if not -14 * 60 <= best["day_offset_min"] <= 14 * 60 \
                or not 0 <= best["day_start_min"] < 24 * 60 or best["retention"] > RETENTION_ARCHIVE:
            # (a valid CRC over such values: written by something else, or crafted)
            raise CorruptRecord("posfast: header of %s holds an impossible day rule or retention "
                                "(UTC offset %d min, day start %d min, retention %d); restore it "
                                "from a backup" % (path, best["day_offset_min"],
                                                   best["day_start_min"], best["retention"]))
        self.slot_size = best["slot_size"]
        self.capacity = best["capacity"]
        self.max_payload = best["max_payload"]
        memcpy(self.jid, PyBytes_AS_STRING(best["journal_id"]), 16)
        self.jid_crc = pf_crc32c(0, self.jid, 16)
        self.created_us = best["created_us"]
        self.day_offset_min = best["day_offset_min"]
        self.day_start_min = best["day_start_min"]
        self.retention = best["retention"]
        self.sync_watermark = best["sync_watermark"]
        self.generation = best["generation"]
        self.version = best["version"]
        self.tz_name = best["tz_name"]
        self.ckpt_seq = best["ckpt_seq"]
        self.ckpt_pos = best["ckpt_pos"]
        # a window the writer could not have used (crafted) counts as no mark: scan it all
        self.ckpt_window = best["ckpt_window"] if best["ckpt_window"] <= PF_CKPT_WINDOW \
            and best["ckpt_pos"] >= 1 else 0
        memcpy(self.ckpt_link, PyBytes_AS_STRING(best["ckpt_link"]), 16)
        self.clean = best["clean"] and self.ckpt_window > 0
        self.index_digest = best["index_digest"]
        self.index_head = best["index_head"]
        expected = PF_DATA_OFFSET + <long long>(self.capacity * self.slot_size)
        if size < expected:
            # A truncated file keeps its surviving slots readable; the missing
            # ones read as damaged.  Refuse sizes that could only be a bad header.
            if expected > 2 * size + (1 << 20):
                raise CorruptRecord("posfast: %s is %d bytes but its header describes %d bytes: "
                                    "truncated or not this journal; restore from a backup"
                                    % (path, size, expected))
            # reported to read-only openers too (`posfast verify` opens read-only)
            self.damaged.append((0, <long long>((size - PF_DATA_OFFSET) // self.slot_size)
                                 if size > PF_DATA_OFFSET else 0,
                                 "file was truncated to %d of %d bytes" % (size, expected)))
            if writable:
                if pf_allocate(self.fd, <uint64_t>expected) != 0:
                    raise IOFailure(pf_errno(), "posfast: %s is truncated (%d of %d bytes) and "
                                    "could not be extended" % (path, size, expected))
                size = expected
        if sizeof(void *) < 8 and expected > (1 << 30):
            raise FormatVersionError("posfast: %s is %d bytes: journals over 1 GiB need a 64-bit "
                                     "CPU; create a smaller one on this terminal" % (path, expected))
        self.map_len = <size_t>(size if size < expected else expected)
        self.avail_slots = (<uint64_t>(self.map_len - PF_DATA_OFFSET) // self.slot_size
                            if self.map_len > PF_DATA_OFFSET else 0)
        self.map = <uint8_t *>pf_map(self.fd, self.map_len)
        if self.map == NULL:
            raise OSError(pf_errno(), "posfast: cannot map %s (%d bytes)" % (path, self.map_len))
        # calloc: a large one is fresh zero pages, touched only as seqs are placed
        self.pos_of = <uint64_t *>calloc(self.capacity, sizeof(uint64_t))
        if self.pos_of == NULL:
            raise MemoryError("posfast: %d slots of %s do not fit in memory" % (self.capacity, path))
        self.head_seq = 0
        self.oldest_seq = 1
        self.next_pos = 1
        self._genesis()
        return self

    cdef void _genesis(self):
        g = genesis_link(bytes(self.jid[:16]))
        memcpy(self.head_link, PyBytes_AS_STRING(g), 16)

    def drop_inherited(self):
        """In a child forked from the writer: let go of the file without writing or syncing a
        byte.  Only this descriptor closes; the parent keeps its handle and its lock."""
        if self.map != NULL:
            pf_unmap(self.map, self.map_len)
            self.map = NULL
        if self.fd >= 0:
            pf_close(self.fd)
            self.fd = -1

    def close(self):
        if self.fd >= 0 and self.writable and not self.failed and self.version >= 2 \
                and not (self.clean and self.ckpt_pos == self.next_pos and not self.header_stale):
            # (syncs the records first) the next open needs no recovery read at all.  If it
            # cannot be written the header keeps the last mark: the next open reads its window.
            try:
                self._mark_tail(True)
            except IOFailure:
                pass
        if self.map != NULL:
            pf_unmap(self.map, self.map_len)
            self.map = NULL
        if self.fd >= 0:
            if self.writable and not self.failed and self.group_first_seq:
                self._sync()
            pf_close(self.fd)
            self.fd = -1

    @property
    def journal_id(self):
        return bytes(self.jid[:16])

    @property
    def head_link(self):
        return bytes(self.head_link[:16])

    @property
    def closed(self):
        return self.fd < 0

    @property
    def live_records(self):
        return self.head_seq - self.oldest_seq + 1 if self.head_seq >= self.oldest_seq else 0

    @property
    def used_slots(self):
        if self.head_seq < self.oldest_seq:
            return 0
        return self.next_pos - self._pos(self.oldest_seq) \
            if self._pos(self.oldest_seq) else self.live_records

    def position_of(self, uint64_t seq):
        """Slot position of a live seq (0 if damaged); used by the index file and tests."""
        if seq < self.oldest_seq or seq > self.head_seq:
            raise KeyError(seq)
        return self._pos(seq)

    def slot_of(self, uint64_t seq):
        cdef uint64_t p = self.position_of(seq)
        return (p - 1) % self.capacity if p else None

    # --------------------------------------------------------------- positions
    cdef inline uint64_t _pos(self, uint64_t seq) noexcept nogil:
        # (seq must be live: oldest_seq <= seq <= head_seq)
        cdef uint64_t p
        if self.idx_first <= seq <= self.idx_last:
            # the index file's positions are hints: the head there must claim them
            p = pf_ld64(self.idx_pos + (seq - self.idx_first) * 8)
            if self._claims(p, seq):
                return p
            return self._repair_pos(seq, p)
        return self.pos_of[(seq - 1) % self.capacity]

    cdef inline uint64_t _pos_hint(self, uint64_t seq) noexcept nogil:
        # where seq's record should be (the index file's position unchecked, or pos_of):
        # for prefetching, which must not touch the record itself
        if self.idx_first <= seq <= self.idx_last:
            return pf_ld64(self.idx_pos + (seq - self.idx_first) * 8)
        return self.pos_of[(seq - 1) % self.capacity]

    cdef inline uint64_t _slot(self, uint64_t pos) noexcept nogil:
        # (pos - 1) % capacity, without a division for a position of the lap of lap_base or
        # the one before (every live record); any multiple of capacity in lap_base is right
        cdef uint64_t p = pos - 1, b = self.lap_base
        if p >= b:
            if p - b < self.capacity:
                return p - b
        elif b - p <= self.capacity:
            return p + self.capacity - b
        return p % self.capacity

    cdef inline void _note_lap(self) noexcept nogil:
        # lap_base: the start of next_pos's lap (a division, once per group or read)
        cdef uint64_t p = self.next_pos - 1 if self.next_pos else 0
        self.lap_base = p - p % self.capacity if self.capacity else 0

    cdef inline bint _claims(self, uint64_t p, uint64_t seq) noexcept nogil:
        # Does the head at position p say it is seq at p?  (No CRC: a damaged record in its
        # place is the caller's to report; what this catches is a wrong position.)
        cdef uint64_t slot
        cdef const uint8_t *h
        if p == 0:
            return False
        slot = self._slot(p)
        if slot >= self.avail_slots:
            return True           # cannot tell: the caller's check reports it outside the file
        h = self._slot_ptr(slot)
        return pf_ld64(h + PFR_POS) == p and pf_ld64(h + PFR_SEQ) == seq

    cdef uint64_t _repair_pos(self, uint64_t seq, uint64_t p) noexcept nogil:
        # A position of the index file that no head claims: damaged index (or a damaged head).
        # Walk on from the nearest earlier seq whose position checks out; if the walk meets
        # another head that does not, the record is damaged where the index says: keep p.
        cdef uint64_t s = seq, q, k = 0
        while s > self.idx_first and k < 64:
            s -= 1
            k += 1
            q = pf_ld64(self.idx_pos + (s - self.idx_first) * 8)
            if not self._claims(q, s):
                continue
            while s < seq:
                q += self._nslots_at(q)
                s += 1
                if s < seq and not self._claims(q, s):
                    return p
            if q != p:
                self.idx_repairs += 1
            return q
        return p

    cdef inline void _set_pos(self, uint64_t seq, uint64_t pos) noexcept nogil:
        # Seqs the mapped index covers never change position; a lost one is a new fact
        if self.idx_first <= seq <= self.idx_last:
            self._unmap_index()
        self.pos_of[(seq - 1) % self.capacity] = pos

    cdef void _unmap_index(self) noexcept nogil:
        # copy the mapped positions into pos_of (rare: a seq the index covers changes)
        cdef uint64_t s
        if self.idx_pos == NULL:
            return
        for s in range(self.idx_first, self.idx_last + 1):
            self.pos_of[(s - 1) % self.capacity] = pf_ld64(self.idx_pos + (s - self.idx_first) * 8)
        self.idx_pos = NULL
        self.idx_first = 1
        self.idx_last = 0

    cdef inline uint32_t _body_len(self, const uint8_t *h) noexcept nogil:
        return pf_body_len(h, self.version)

    cdef inline uint32_t _ext_len(self, const uint8_t *h) noexcept nogil:
        return pf_ld16(h + PFR2_EXT_LEN) if self.version >= 2 else 0

    # --------------------------------------------------------------- checking
    cdef inline const uint8_t *_slot_ptr(self, uint64_t slot) noexcept nogil:
        return self.map + PF_DATA_OFFSET + slot * self.slot_size

    cdef uint32_t _crc_at(self, uint64_t slot, uint64_t length) noexcept nogil:
        # CRC of the record bytes [4, length) starting at `slot`, wrapping at the ring end.
        cdef uint64_t ring_bytes = self.capacity * self.slot_size
        cdef uint64_t start = slot * self.slot_size
        cdef uint64_t first = length
        cdef uint32_t crc = self.jid_crc
        if start + first > ring_bytes:
            first = ring_bytes - start
        crc = pf_crc32c(crc, self.map + PF_DATA_OFFSET + start + 4, first - 4)
        if first < length:
            crc = pf_crc32c(crc, self.map + PF_DATA_OFFSET, length - first)
        return crc

    cdef int _check_at(self, uint64_t pos, uint64_t seq) noexcept nogil:
        # Is a valid record of `seq` (0 = any) at position `pos`?
        cdef uint64_t slot = self._slot(pos)
        cdef const uint8_t *h
        cdef uint64_t length, nslots
        cdef uint32_t plen, elen
        if slot >= self.avail_slots:
            return CHK_OUTSIDE
        h = self._slot_ptr(slot)
        # every record takes a slot at least, so seq <= pos; and 2**62 positions are more than
        # any terminal writes (crafted heads with absurd ones would overflow pos + capacity)
        if pf_ld64(h + PFR_POS) != pos or pf_ld64(h + PFR_SEQ) == 0 or pf_ld64(h + PFR_SEQ) > pos \
                or pos > (<uint64_t>1 << 62):
            return CHK_NOT_HEAD
        plen = pf_ld16(h + PFR_PAYLOAD_LEN)
        elen = self._ext_len(h)         # (read once: a reader's writer may change it meanwhile)
        if plen > self.max_payload or elen > PF_MAX_EXT:
            return CHK_LENGTH
        length = PFR_HEAD_SIZE + plen + elen
        if length > self.capacity * self.slot_size:
            return CHK_LENGTH           # (no record is larger than the ring)
        nslots = _ceil_div(length, self.slot_size)
        if nslots > 1 and ((slot + nslots > self.capacity and self.avail_slots < self.capacity)
                           or (slot + nslots <= self.capacity and slot + nslots > self.avail_slots)):
            return CHK_OUTSIDE
        if pf_ld32(h) != self._crc_at(slot, length):
            return CHK_CRC
        if seq != 0 and pf_ld64(h + PFR_SEQ) != seq:
            return CHK_STALE
        return CHK_OK

    cdef inline uint64_t _nslots_at(self, uint64_t pos) noexcept nogil:
        return pf_record_slots(self._body_len(self._slot_ptr(self._slot(pos))),
                               self.slot_size)

    cdef inline const uint8_t *_head_of(self, uint64_t pos) noexcept nogil:
        return self._slot_ptr(self._slot(pos))

    cdef void _evict_before(self, uint64_t end_pos) noexcept nogil:
        # A live record whose first slot recurs below end_pos would be (partly) overwritten.
        cdef uint64_t p
        while self.oldest_seq <= self.head_seq:
            p = self._pos(self.oldest_seq)
            if p != 0 and p + self.capacity >= end_pos:
                break
            self.oldest_seq += 1      # damaged seqs (p == 0) at the old end simply go

    cdef void _walk(self) noexcept nogil:
        # Follow positions from next_pos while each holds the next seq, intact.
        cdef uint64_t seq = self.head_seq + 1
        cdef uint64_t n
        while self._check_at(self.next_pos, seq) == CHK_OK:
            n = self._nslots_at(self.next_pos)
            self._evict_before(self.next_pos + n)
            self._set_pos(seq, self.next_pos)
            self.head_seq = seq
            self.next_pos += n
            seq += 1
        if self.head_seq >= self.oldest_seq and self._pos(self.head_seq):
            memcpy(self.head_link, self._head_of(self._pos(self.head_seq))
                   + PFR_LINK, 16)

    cdef list _heads_ahead(self):
        # Every intact head after the tail, by position: a torn group or records behind
        # damage.  (A torn group may already have overwritten the oldest records' slots.)
        # Version 2 reads only the slots the tail mark leaves the writer (none after a clean
        # close); version 1, or a mark that cannot be right, reads every slot.
        cdef uint64_t lo = self.next_pos, hi, count, first
        found = []
        ranges = [(0, self.avail_slots)]
        if self.version >= 2 and self.ckpt_window:
            hi = self.ckpt_pos if self.clean else self.ckpt_pos + self.ckpt_window
            if lo <= hi and hi - lo < self.capacity:
                count = hi - lo
                first = (lo - 1) % self.capacity
                ranges = [(first, min(self.capacity, first + count))]
                if first + count > self.capacity:
                    ranges.append((0, first + count - self.capacity))
        for a, b in ranges:
            self._heads_in(a, min(b, self.avail_slots), found)
        found.sort()
        return found

    cdef int _heads_in(self, uint64_t slot, uint64_t end, list found) except -1:
        cdef uint64_t pos, k, got
        cdef const uint8_t *h
        cdef uint8_t *buf
        if slot >= end:
            return 0
        buf = self._scan_buffer()
        try:
            while slot < end:
                got = self._read_slots(slot, buf, end)
                self.recovery_slots += got
                for k in range(got):
                    h = buf + k * self.slot_size
                    pos = pf_ld64(h + PFR_POS)
                    if pos >= self.next_pos and (pos - 1) % self.capacity == slot + k \
                            and pf_ld64(h + PFR_SEQ) > self.head_seq \
                            and self._check_at(pos, 0) == CHK_OK:
                        found.append((pos, pf_ld64(h + PFR_SEQ), pf_ld16(h + PFR_GROUP_OFF)))
                slot += got
        finally:
            free(buf)
        return 0

    cdef inline uint64_t _chunk_slots(self) noexcept nogil:
        return SCAN_CHUNK_BYTES // self.slot_size if self.slot_size < SCAN_CHUNK_BYTES else 1

    cdef uint8_t *_scan_buffer(self) except NULL:
        cdef uint8_t *buf = <uint8_t *>malloc(self._chunk_slots() * <size_t>self.slot_size)
        if buf == NULL:
            raise MemoryError()
        return buf

    cdef uint64_t _read_slots(self, uint64_t slot, uint8_t *buf, uint64_t end) except? 0:
        # Whole-file scans read through pread, not the map: the page cache still serves
        # them, but they leave no file pages mapped into the process (its RSS stays small).
        cdef uint64_t n = end - slot
        cdef long long r
        if n > self._chunk_slots():
            n = self._chunk_slots()
        with nogil:
            r = pf_pread(self.fd, buf, n * self.slot_size, PF_DATA_OFFSET + slot * self.slot_size)
        if r < 0:
            raise IOFailure(pf_errno(), "posfast: cannot read %s while recovering: %s"
                            % (self.path, _os.strerror(pf_errno())))
        if <uint64_t>r < n * self.slot_size:
            memset(buf + r, 0, n * self.slot_size - <uint64_t>r)
        return n

    cdef int _finish_recovery(self) except -1:
        # The walk stopped.  Records after the stop are either the torn rest of
        # the newest commit group (never acknowledged: dropped) or live records
        # behind damage (kept, the damage reported).  Candidates are those within a
        # lap of the tail; the heads are found in one scan and fed through two heaps
        # as the tail moves (rescanning at every gap made many gaps quadratic).
        import heapq
        cdef uint64_t gap_seq, seq, pos, stop
        cdef Py_ssize_t fed = 0
        heads = None
        low = []            # (seq, pos, group_off): the oldest candidate on top
        high = []           # (-seq, pos, group_off): the newest candidate on top
        while True:
            self._walk()
            if heads is None:
                heads = self._heads_ahead()
            while fed < len(heads) and heads[fed][0] < self.next_pos + self.capacity:
                head_pos, head_seq, head_off = heads[fed]       # Python ints: -head_seq is fine
                heapq.heappush(low, (head_seq, head_pos, head_off))
                heapq.heappush(high, (-head_seq, head_pos, head_off))
                fed += 1
            # candidates the walk has passed are done with for good
            while low and (low[0][0] <= self.head_seq or low[0][1] < self.next_pos):
                heapq.heappop(low)
            while high and (-high[0][0] <= self.head_seq or high[0][1] < self.next_pos):
                heapq.heappop(high)
            if not low:
                return 0
            gap_seq = self.head_seq + 1
            last_seq, last_off = -high[0][0], high[0][2]
            if last_seq - last_off <= gap_seq:
                # the newest group began at or before the gap: a torn tail.  What it was
                # overwriting had been evicted by the writer (never the newest intact record).
                ahead = sorted(h for h in low if h[0] > self.head_seq and h[1] >= self.next_pos)
                torn_end = 0
                for seq, pos, _ in ahead:
                    self.torn.append((seq, (pos - 1) % self.capacity))
                    torn_end = max(torn_end, pos + self._nslots_at(pos))
                if self.head_seq >= self.oldest_seq:
                    seq = self.oldest_seq
                    self._evict_before(min(torn_end, self._pos(self.head_seq)
                                           + self.capacity))
                    # records noted lost on the way were that group's doing, not damage
                    self.damaged[:] = [d for d in self.damaged
                                       if not seq <= d[0] < self.oldest_seq]
                if self.writable and not self.failed:
                    # Zeroing the torn heads erases how far the group reached, so first
                    # zero the heads of the records it evicted (else a later scan takes them
                    # for live ones): a crash anywhere in here recovers the same way again.
                    if self._zero_evicted():
                        self._sync()
                    for seq, pos, _ in ahead:
                        self._zero_head(pos)
                    self._sync()
                return 0
            first_seq, first_pos = low[0][0], low[0][1]
            # the lost seqs must fit in the slots between (each record takes one at least)
            if first_pos <= self.next_pos or first_seq <= gap_seq or \
                    first_seq - gap_seq > first_pos - self.next_pos:
                # Heads ahead that fit neither story (a file edited or crafted): not ours.
                # Left in place, the next appends could make them look like records behind
                # damage (found by fuzzing), so a writer drops them as it does a torn tail.
                ahead = sorted(h for h in low if h[0] > self.head_seq and h[1] >= self.next_pos)
                for seq, pos, _ in ahead:
                    self.torn.append((seq, (pos - 1) % self.capacity))
                if self.writable and not self.failed and ahead:
                    for seq, pos, _ in ahead:
                        self._zero_head(pos)
                    self._sync()
                return 0
            # (a C loop over uint64: range() here bounded the seqs with a Py_ssize_t, which
            # overflows past 2**31 on a 32-bit CPU)
            seq = gap_seq
            stop = first_seq
            while seq < stop:
                self.damaged.append((seq, (self.next_pos - 1) % self.capacity,
                                     "record lost to damage: followed by intact seq %d" % first_seq))
                self._set_pos(seq, 0)
                seq += 1
            self.head_seq = first_seq - 1
            self._evict_before(first_pos)
            self.next_pos = first_pos

    cdef bint _zero_evicted(self) except -1:
        # Intact heads within a lap of the tail but older than the oldest live record.
        cdef uint64_t q, end, slot
        cdef const uint8_t *h
        cdef bint wrote = False
        end = self._pos(self.oldest_seq) \
            if self.head_seq >= self.oldest_seq else self.next_pos
        q = self.next_pos - self.capacity if self.next_pos > self.capacity else 1
        while q < end:
            slot = (q - 1) % self.capacity
            if slot < self.avail_slots:
                h = self._slot_ptr(slot)
                if pf_ld64(h + PFR_POS) == q and self._check_at(q, 0) == CHK_OK:
                    self._zero_head(q)
                    wrote = True
            q += 1
        return wrote

    cdef int _zero_head(self, uint64_t pos) except -1:
        cdef uint8_t zeros[128]   # PFR_HEAD_SIZE
        memset(zeros, 0, PFR_HEAD_SIZE)
        self._write(zeros, PFR_HEAD_SIZE, PF_DATA_OFFSET + ((pos - 1) % self.capacity) * self.slot_size)
        return 0

    def recover_from(self, uint64_t hint_seq, uint64_t oldest_seq, bytes hint_link, positions,
                     lost=None):
        """Resume from an index snapshot: positions (little-endian u64, any buffer) holds the
        position of seq oldest_seq + i at [i].  It is used in place, not copied: a mapped
        index file is read only where lookups look.  `lost`: whether the snapshot holds a lost
        record (position 0); None = look through the positions.

        Returns False (and leaves the ring empty) when the snapshot does not match
        the file; the caller then runs recover_scan().
        """
        cdef const uint8_t[::1] raw = memoryview(positions).cast("B") if len(positions) \
            else memoryview(b"\0" * 8)
        cdef uint64_t i, n = len(positions) and <uint64_t>raw.shape[0] // 8
        cdef uint64_t hint_pos, first_pos, q
        cdef size_t known_damage = len(self.damaged)
        if hint_seq == 0:
            return self.recover_scan()
        if n == 0 or n != hint_seq - oldest_seq + 1 or n > self.capacity or len(hint_link) != 16:
            return False
        hint_pos = pf_ld64(&raw[(n - 1) * 8])
        first_pos = pf_ld64(&raw[0])
        if hint_pos == 0 or self._check_at(hint_pos, hint_seq) != CHK_OK or \
                memcmp(self._head_of(hint_pos) + PFR_LINK, PyBytes_AS_STRING(hint_link), 16) != 0:
            return False
        if lost is None:
            lost = False
            for i in range(n):
                if pf_ld64(&raw[i * 8]) == 0:
                    lost = True
                    break
        if lost or first_pos == 0:
            # the snapshot says a record was lost: let a scan look again (the file may
            # have been restored since), rather than keep reporting a record that is there
            return False
        if self.retention != RETENTION_OVERWRITE and oldest_seq > self.sync_watermark + 1:
            # records the back office never acknowledged cannot have been evicted: they were
            # lost, and only a scan reports that (on every open, not just the first)
            return False
        if oldest_seq > 1:
            # An intact record of oldest_seq - 1 just before the oldest one: the ring holds
            # more than the snapshot knew (it had found that record damaged, and the file was
            # restored since); nothing evicts a record without overwriting its head.
            q = first_pos - 1
            while q >= 1 and q + pf_record_slots(self.max_payload + PF_MAX_EXT,
                                                 self.slot_size) >= first_pos:
                if self._check_at(q, oldest_seq - 1) == CHK_OK and \
                        q + self._nslots_at(q) == first_pos:
                    return False
                q -= 1
        self.idx_owner = positions
        self.idx_pos = &raw[0]
        self.idx_first = oldest_seq
        self.idx_last = hint_seq
        self.oldest_seq = oldest_seq
        self.head_seq = hint_seq
        self.next_pos = hint_pos + self._nslots_at(hint_pos)
        self._finish_recovery()
        if self.head_seq >= self.oldest_seq and (
                self._pos(self.oldest_seq) == 0 or
                self._check_at(self._pos(self.oldest_seq),
                               self.oldest_seq) != CHK_OK):
            # The snapshot's oldest records are gone (evicted by a torn group, whose heads
            # recovery zeroed): let the scan decide where the ring starts, as without index.
            del self.damaged[known_damage:]
            self._drop_index_positions()
            return False
        return True

    cdef void _drop_index_positions(self):
        self.idx_pos = NULL
        self.idx_first = 1
        self.idx_last = 0
        self.idx_owner = None

    def recover_scan(self):
        """Rebuild the live range from a scan of every slot (no usable index)."""
        cdef uint64_t slot = 0, pos, seq, best_seq = 0, best_pos = 0, end, start_seq, start_pos
        cdef uint64_t k, got
        cdef const uint8_t *h
        cdef uint8_t *buf = self._scan_buffer()
        heads = []
        try:
            while slot < self.avail_slots:
                got = self._read_slots(slot, buf, self.avail_slots)
                for k in range(got):
                    h = buf + k * self.slot_size
                    pos = pf_ld64(h + PFR_POS)
                    if pos == 0 or (pos - 1) % self.capacity != slot + k:
                        continue
                    if self._check_at(pos, 0) != CHK_OK:
                        continue
                    seq = pf_ld64(h + PFR_SEQ)
                    heads.append((seq, pos))
                    if seq > best_seq:
                        best_seq, best_pos = seq, pos
                slot += got
        finally:
            free(buf)
        self._drop_index_positions()
        self.head_seq = 0
        self.oldest_seq = 1
        self.next_pos = 1
        if not heads:
            if self.sync_watermark:
                self.damaged.append((self.sync_watermark, 0, "no intact record found, yet the back "
                                     "office acknowledged up to seq %d" % self.sync_watermark))
            return True
        end = best_pos + self._nslots_at(best_pos)
        start_seq, start_pos = best_seq, best_pos
        for seq, pos in heads:
            if pos + self.capacity >= end and seq < start_seq and pos < start_pos:
                start_seq, start_pos = seq, pos
        # Records before start_seq are gone: evicted after sync (normal) or lost.
        if start_seq > 1 and start_seq - 1 > self.sync_watermark \
                and self.retention != RETENTION_OVERWRITE:
            # an append (even one in flight at a crash) never evicts what the back office has
            # not acknowledged, wrapped or not: seqs above the watermark before start_seq are lost
            first_lost = 1 if end <= self.capacity + 1 else self.sync_watermark + 1
            self.damaged.append((first_lost, 0, "records %d..%d lost before the oldest intact "
                                 "record %d" % (first_lost, start_seq - 1, start_seq)))
        self.head_seq = start_seq - 1
        self.oldest_seq = start_seq
        self.next_pos = start_pos
        self._finish_recovery()
        return True

    def refresh(self):
        """Read-only handles: pick up records the writer appended since.  Returns how many."""
        cdef uint64_t before = self.head_seq
        if self.fd < 0:
            raise JournalClosed("posfast: journal %s is closed" % (self.path,))
        with nogil:
            self._walk()
        if self._lapped():
            return -1
        return self.head_seq - before

    cdef bint _lapped(self) noexcept nogil:
        # Has the writer gone round the ring past this (read-only) handle's view?  Then its
        # newest record is overwritten, or its tail slot holds a head of a later lap.  (A
        # check for seq 0 never says "stale", so that cannot be what tells.)
        cdef uint64_t head_pos, q, slot = (self.next_pos - 1) % self.capacity
        if self.head_seq >= self.oldest_seq:
            head_pos = self._pos(self.head_seq)
            if head_pos and self._check_at(head_pos, self.head_seq) != CHK_OK:
                return True
        if slot < self.avail_slots:
            q = pf_ld64(self._slot_ptr(slot) + PFR_POS)
            if q > self.next_pos and (q - 1) % self.capacity == slot and self._check_at(q, 0) == CHK_OK:
                return True
        return False

    cdef bint _overwritten_since(self, uint64_t pos) noexcept nogil:
        # Read-only handles lag the writer: has it written position pos + capacity by now
        # (evicting the record at pos), following its records on from this handle's tail?
        cdef uint64_t q = self.next_pos, seq = self.head_seq + 1
        if self._lapped():
            return True
        while q <= pos + self.capacity and self._check_at(q, seq) == CHK_OK:
            q += self._nslots_at(q)
            seq += 1
        return q > pos + self.capacity

    # ------------------------------------------------------------------ append
    cdef uint64_t _last_evicted(self, uint64_t slots) noexcept nogil:
        """Last seq that `slots` more slots would evict (0 if none)."""
        cdef uint64_t end = self.next_pos + slots, seq = self.oldest_seq, p, last = 0
        while seq <= self.head_seq:
            p = self._pos(seq)
            if p != 0 and p + self.capacity >= end:
                break
            last = seq
            seq += 1
        return last

    def plan(self, const uint32_t[::1] payload_lens):
        """Last seq that appending records with these body lengths (v2: extension + payload)
        would evict (0 if none), and the slots they take."""
        cdef uint64_t slots = 0, i
        for i in range(<uint64_t>payload_lens.shape[0]):
            slots += pf_record_slots(payload_lens[i], self.slot_size)
        return self._last_evicted(slots), slots

    def append(self, const uint8_t[:, ::1] rows, payload_buf=None, offsets=None, ext_lens=None):
        """Append rows (RECORD_DTYPE bytes) with optional payloads; returns the first new seq.

        payload_buf is one bytes object, offsets an array of n+1 uint64 offsets into it: each
        record's body.  In version 2 a body starts with the record's extension, ext_lens[i]
        bytes of it (a uint16 array; None = none), as `encode_ext` makes it.
        Rows are written in commit groups; in fsync mode each group is on stable
        storage before the next is written and before this returns.
        """
        cdef uint64_t n = rows.shape[0]
        cdef const uint8_t[::1] pay
        cdef const uint64_t[::1] offs
        cdef const uint16_t[::1] elens
        cdef const uint8_t *pay_p = NULL
        cdef const uint64_t *offs_p = NULL
        cdef const uint16_t *elens_p = NULL
        self._usable()
        if rows.shape[1] != PFW_SIZE:
            raise ValueError("rows must be RECORD_DTYPE (%d bytes each)" % PFW_SIZE)
        if n == 0:
            return self.head_seq + 1
        if payload_buf is not None:
            pay = memoryview(payload_buf).cast("B") if len(payload_buf) else b"\0"
            offs = offsets
            if <uint64_t>offs.shape[0] != n + 1:
                raise ValueError("offsets must have one entry more than rows")
            if offs[n] > <uint64_t>pay.shape[0]:
                raise ValueError("offsets reach past the end of the bodies")
            pay_p, offs_p = &pay[0], &offs[0]
            if ext_lens is not None:
                elens = ext_lens
                if <uint64_t>elens.shape[0] != n:
                    raise ValueError("ext_lens must have one entry per row")
                elens_p = &elens[0]
        elif ext_lens is not None:
            raise ValueError("ext_lens without bodies")
        return self._append(&rows[0, 0], n, pay_p, offs_p, elens_p)

    def append_one(self, const uint8_t[::1] row, body=None, uint16_t ext_len=0):
        """Append one record (a RECORD_DTYPE row of bytes) whose body (v2: its extension of
        `ext_len` bytes, then its payload) is `body`; returns its seq.  What `append` does for
        one row, without arrays: the path of a durable single append."""
        cdef const uint8_t[::1] pay
        cdef uint64_t offs[2]
        cdef const uint8_t *pay_p = NULL
        self._usable()
        if <uint64_t>row.shape[0] != PFW_SIZE:
            raise ValueError("a row is RECORD_DTYPE (%d bytes)" % PFW_SIZE)
        offs[0] = 0
        offs[1] = 0
        if body is not None and len(body):
            pay = body
            pay_p = &pay[0]
            offs[1] = <uint64_t>pay.shape[0]
        elif ext_len:
            raise ValueError("ext_len without a body")
        return self._append(&row[0], 1, pay_p, offs if pay_p != NULL else NULL,
                            &ext_len if ext_len else NULL)

    def append_fields(self, dict fields, bytes payload=b"", bytes order_ref=b"",
                      bytes host_ref=b"", int64_t day_shift=0, day_of=None):
        """Append one record from its keyword fields, validated and packed here (fields.pxi),
        with `payload` (already checked) and the references (already checked); the business
        day is (ts + day_shift) // one day, or day_of(ts) when given.  Returns (seq, day,
        terminal, kind, row) -- the row as RECORD_DTYPE bytes -- or None when the fields are
        not the common case, and nothing was written: then validate them in Python."""
        cdef uint8_t row[120]       # PFW_SIZE
        cdef uint8_t *body = NULL
        cdef Py_ssize_t elen = 0, plen = len(payload), klen
        cdef uint64_t seq
        cdef uint64_t offs[2]
        cdef uint16_t ext_len
        self._usable()
        if not _pack_fields(fields, row, day_shift, day_of):
            return None
        if self.version < 2 and (order_ref or host_ref or row[PFW_CHANNEL]):
            return None             # (format 1 has no room for them: Python says so)
        if len(order_ref) > PF_REF_SIZE or len(host_ref) > PF_REF_SIZE:
            return None
        body = <uint8_t *>malloc(2 * (16 + 2 + PF_REF_SIZE + 2) + plen + 1)
        if body == NULL:
            raise MemoryError()
        try:
            if self.version >= 2:
                klen = _client_ext_len(row)
                elen = _put_tlv(body, PF_EXT_CLIENT_REF, row + PFW_CLIENT_REF,
                                klen - 2 if klen else 0)
                elen += _put_tlv(body + elen, PF_EXT_ORDER_REF,
                                 <const uint8_t *>PyBytes_AS_STRING(order_ref), len(order_ref))
                elen += _put_tlv(body + elen, PF_EXT_HOST_REF,
                                 <const uint8_t *>PyBytes_AS_STRING(host_ref), len(host_ref))
            if plen:
                memcpy(body + elen, PyBytes_AS_STRING(payload), plen)
            seq = self.head_seq + 1
            pf_st64(row + PFW_SEQ, seq)
            if _payment_kind[row[PFW_KIND]] and pf_ld64(row + PFW_TXN_ID) == 0:
                pf_st64(row + PFW_TXN_ID, seq)      # a payment's first record names it
            offs[0] = 0
            offs[1] = <uint64_t>(elen + plen)
            ext_len = <uint16_t>elen
            self._append(row, 1, body if elen + plen else NULL, offs if elen + plen else NULL,
                         &ext_len if elen else NULL)
        finally:
            free(body)
        return (seq, <int32_t>pf_ld32(row + PFW_DAY), pf_ld32(row + PFW_TERMINAL),
                row[PFW_KIND], PyBytes_FromStringAndSize(<char *>row, PFW_SIZE))

    cdef uint64_t _append(self, const uint8_t *rows, uint64_t n, const uint8_t *pay,
                          const uint64_t *offs, const uint16_t *elens) except 0:
        """The append of `append` and `append_one`: n rows of PFW_SIZE bytes; bodies in `pay`
        at `offs` (n + 1 offsets; NULL = none), extension lengths in `elens` (NULL = none).

        In format 2 with no extension lengths given, each record's extension is its client_ref
        (from its row, as encode_ext makes it), put before its body here: a bulk import with
        idempotency keys needs no extension built outside."""
        cdef uint64_t i, j, k, seq, first_seq, plen, nsl, gslots, total_slots = 0, last_evicted
        cdef uint64_t gstart_pos, slot0, first_part, room, used, gfirst, max_len = 0
        cdef uint8_t *buf = NULL
        cdef uint8_t *head
        cdef uint8_t prev_link[16]
        cdef uint32_t crc
        cdef bint has_payload = offs != NULL
        cdef bint has_ext = elens != NULL
        cdef bint auto_ext = self.version >= 2 and not has_ext
        cdef uint64_t elen, alen, done_slots = 0
        if has_ext and self.version < 2:
            raise InvalidRecord("posfast: %s is a format-1 journal, which has no record "
                                "extension (order_ref, host_ref)" % (self.path,))
        for i in range(n):
            plen = 0
            if has_payload:
                elen = elens[i] if has_ext else 0
                if offs[i + 1] < offs[i] or elen > PF_MAX_EXT or elen > offs[i + 1] - offs[i]:
                    raise ValueError("record %d: body of %d bytes, extension of %d"
                                     % (i, offs[i + 1] - offs[i], elen))
                plen = offs[i + 1] - offs[i]
                if plen - elen > self.max_payload:
                    raise InvalidRecord("posfast: payload of record %d is %d bytes; %s allows at most "
                                        "%d (max_payload at create)" % (i, plen - elen, self.path,
                                                                        self.max_payload))
            plen += _client_ext_len(rows + i * PFW_SIZE) if auto_ext else 0
            max_len = max(max_len, plen)
            total_slots += pf_record_slots(<uint32_t>plen, self.slot_size)
        if pf_record_slots(<uint32_t>max_len, self.slot_size) > self.capacity:
            raise InvalidRecord("posfast: a record with %d payload bytes needs %d slots but %s has "
                                "only %d; use a smaller payload" % (
                                    max_len, pf_record_slots(<uint32_t>max_len, self.slot_size),
                                    self.path, self.capacity))
        last_evicted = self._last_evicted(total_slots)
        if self.next_pos + total_slots > (<uint64_t>1 << 62) + 1:
            # never reached by a real terminal; a crafted file could start there (found by
            # fuzzing), and heads past 2**62 do not count as records (see _check_at)
            raise JournalFull("posfast: %s has used up its record positions (2**62); the file "
                              "was damaged or crafted: create a new journal" % (self.path,))
        if self.retention != RETENTION_OVERWRITE:
            if total_slots > self.capacity:
                raise JournalFull("posfast: %d records need %d slots but %s holds %d; append fewer "
                                  "at a time" % (n, total_slots, self.path, self.capacity))
            if last_evicted > self.sync_watermark:
                raise JournalFull(
                    "posfast: journal %s is full: %d records are not yet acknowledged by the back "
                    "office (synced up to seq %d of %d) and appending would overwrite seq %d. "
                    "Nothing was written. Run `posfast sync` to free space, or create the journal "
                    "with retention='overwrite'." % (self.path, self.head_seq - self.sync_watermark,
                                                      self.sync_watermark, self.head_seq,
                                                      self.sync_watermark + 1))
        first_seq = self.head_seq + 1
        i = 0
        # as large as a group can get (at most half the ring, and no more than these records
        # take, plus one oversize record) -- not GROUP_SLOTS_MAX slots: with 64 KiB slots that
        # was a 4 GiB malloc at every append
        gslots = min(<uint64_t>GROUP_SLOTS_MAX, max(<uint64_t>1, self.capacity // 2), total_slots)
        buf = <uint8_t *>malloc(gslots * <size_t>self.slot_size
                                + (PF_MAX_PAYLOAD + PFR_HEAD_SIZE) + self.slot_size)
        if buf == NULL:
            raise MemoryError()
        try:
            while i < n:
                if self.version >= 2 and (self.clean or self.next_pos + min(
                        total_slots - done_slots, self.ckpt_window) > self.ckpt_pos + self.ckpt_window):
                    # the group could pass the tail mark's window: a new mark first
                    self._mark_tail(False)
                # A commit group spans at most half the ring, so the next one, torn by a
                # crash, can never overwrite it: recovery then never mistakes a synced group
                # for a torn one (and drops acknowledged records).
                room = self.capacity // 2 if self.capacity > 1 else 1
                used = self.next_pos - self._pos(self.group_first_seq) \
                    if self.group_first_seq and self.group_first_seq <= self.head_seq else 0
                plen = offs[i + 1] - offs[i] if has_payload else 0
                plen += _client_ext_len(rows + i * PFW_SIZE) if auto_ext else 0
                if self.group_first_seq and (
                        self.head_seq + 1 - self.group_first_seq >= PF_MAX_GROUP_RECORDS or
                        (used and used + pf_record_slots(<uint32_t>plen, self.slot_size) > room)):
                    self._group_full()
                    used = 0
                room = room - used if room > used else 0
                if self.group_first_seq == 0:
                    self.group_first_seq = self.head_seq + 1
                # encode one group into buf
                memcpy(prev_link, self.head_link, 16)
                gslots = 0
                j = i
                gstart_pos = self.next_pos
                seq = self.head_seq + 1
                # Without syncs (durability none) a commit group would run on for 65535
                # records, and recovery would take damage anywhere in them for a torn tail
                # and drop everything after it: there, each write is its own group.
                gfirst = self.group_first_seq if self.durability != DURABILITY_NONE else seq
                with nogil:
                    while j < n:
                        plen = offs[j + 1] - offs[j] if has_payload else 0
                        alen = _client_ext_len(rows + j * PFW_SIZE) if auto_ext else 0
                        nsl = pf_record_slots(<uint32_t>(plen + alen), self.slot_size)
                        if j > i and (gslots + nsl > GROUP_SLOTS_MAX or gslots + nsl > room or
                                      seq - self.group_first_seq >= PF_MAX_GROUP_RECORDS):
                            break
                        head = buf + gslots * self.slot_size
                        memset(head, 0, nsl * self.slot_size)
                        _encode_row(rows + j * PFW_SIZE, head, self.version)
                        elen = elens[j] if has_ext else alen
                        pf_st64(head + PFR_SEQ, seq)
                        pf_st64(head + PFR_POS, gstart_pos + gslots)
                        pf_st16(head + PFR_PAYLOAD_LEN, <uint16_t>(plen + alen - elen))
                        if self.version >= 2:
                            pf_st16(head + PFR2_EXT_LEN, <uint16_t>elen)
                        pf_st16(head + PFR_GROUP_OFF, <uint16_t>(seq - gfirst))
                        if alen:
                            _put_tlv(head + PFR_HEAD_SIZE, PF_EXT_CLIENT_REF,
                                     rows + j * PFW_SIZE + PFW_CLIENT_REF, alen - 2)
                        if plen:
                            memcpy(head + PFR_HEAD_SIZE + alen, pay + offs[j], plen)
                        plen += alen
                        _link_of(prev_link, head, head + PFR_HEAD_SIZE, plen, NULL, 0,
                                 head + PFR_LINK)
                        memcpy(prev_link, head + PFR_LINK, 16)
                        crc = pf_crc32c(self.jid_crc, head + 4, PFR_HEAD_SIZE + plen - 4)
                        pf_st32(head + PFR_CRC, crc)
                        gslots += nsl
                        seq += 1
                        j += 1
                # write it, wrapping at the ring end
                slot0 = (gstart_pos - 1) % self.capacity
                first_part = gslots if slot0 + gslots <= self.capacity else self.capacity - slot0
                self._write(buf, first_part * self.slot_size, PF_DATA_OFFSET + slot0 * self.slot_size)
                if first_part < gslots:
                    self._write(buf + first_part * self.slot_size, (gslots - first_part) * self.slot_size,
                                PF_DATA_OFFSET)
                if self.durability == DURABILITY_FSYNC:
                    self._sync()
                # the group is written (and synced if asked): make it live
                with nogil:
                    self._evict_before(gstart_pos + gslots)
                    k = 0
                    seq = self.head_seq + 1
                    while k < gslots:
                        self._set_pos(seq, gstart_pos + k)
                        k += pf_record_slots(self._body_len(buf + k * self.slot_size),
                                             self.slot_size)
                        seq += 1
                    self.head_seq = seq - 1
                    self.next_pos = gstart_pos + gslots
                    self._note_lap()
                    memcpy(self.head_link, prev_link, 16)
                done_slots += gslots
                if self.durability == DURABILITY_BATCH and \
                        self.head_seq + 1 - self.group_first_seq >= self.batch_records:
                    self._sync()
                i = j
        finally:
            free(buf)
        return first_seq

    cdef int _group_full(self) except -1:
        if self.durability == DURABILITY_NONE:
            self.group_first_seq = 0     # no durability promise: just start a new group
        else:
            self._sync()
        return 0

    def sync(self):
        """fdatasync now (batch/none durability); acknowledges every record written so far."""
        self._usable()
        self._sync()

    @property
    def unsynced_writes(self):
        return self.head_seq + 1 - self.group_first_seq if self.group_first_seq else 0

    # ------------------------------------------------------------------- reads
    def read_rows(self, const uint64_t[::1] seqs, uint8_t[:, ::1] out, day=None, terminal=None,
                  kind=None):
        """Decode the records of `seqs` into `out` (RECORD_DTYPE rows), checking each; with
        `day`, `terminal` or `kind` (one value each), also that each row holds it, else its
        status is CHK_NOT_FILTERED (the row is decoded: the caller can say what it is).

        Returns an array of status codes (0 = ok) so callers skip and report the rest.
        """
        import numpy
        cdef uint64_t n = seqs.shape[0], i, seq, pos, ahead
        status_arr = numpy.zeros(n, dtype=numpy.uint8)
        cdef uint8_t[::1] status = status_arr
        cdef int r
        cdef const uint8_t *ph
        cdef bint by_day = day is not None, by_terminal = terminal is not None
        cdef bint by_kind = kind is not None
        cdef int32_t want_day = day if by_day else 0
        cdef uint32_t want_terminal = terminal if by_terminal else 0
        cdef uint8_t want_kind = kind if by_kind else 0
        if <uint64_t>out.shape[0] < n or out.shape[1] != PFW_SIZE:
            raise ValueError("out must hold one RECORD_DTYPE row per seq")
        if self.fd < 0:
            raise JournalClosed("posfast: journal %s is closed" % (self.path,))
        with nogil:
            self._note_lap()
            for i in range(n):
                # Scattered seqs (a terminal's records of a day) miss the cache and TLB on
                # both pos_of and the record: fetch pos_of 2*D ahead and the head D ahead.
                if i + 2 * READ_AHEAD < n:
                    ahead = seqs[i + 2 * READ_AHEAD]
                    if self.oldest_seq <= ahead <= self.head_seq:
                        if self.idx_first <= ahead <= self.idx_last:
                            pf_prefetch(self.idx_pos + (ahead - self.idx_first) * 8)
                        else:
                            pf_prefetch(&self.pos_of[(ahead - 1) % self.capacity])
                if i + READ_AHEAD < n:
                    ahead = seqs[i + READ_AHEAD]
                    if self.oldest_seq <= ahead <= self.head_seq:
                        ahead = self._pos_hint(ahead)      # (not _pos: that reads the head)
                        if ahead and self._slot(ahead) < self.avail_slots:
                            ph = self._head_of(ahead)
                            pf_prefetch(ph)
                            pf_prefetch(ph + 64)
                            if self.slot_size > 128:
                                pf_prefetch(ph + 128)   # (the extension the CRC covers)
                seq = seqs[i]
                if seq < self.oldest_seq or seq > self.head_seq:
                    status[i] = CHK_STALE
                    continue
                pos = self._pos(seq)
                if pos == 0:
                    status[i] = CHK_MISSING
                    continue
                r = self._check_at(pos, seq)
                status[i] = <uint8_t>r
                if r == CHK_OK:
                    self._decode_at(pos, &out[i, 0])
                    if not self.writable and self._check_at(pos, seq) != CHK_OK:
                        # the writer (another handle) overwrote it while we copied: gone
                        status[i] = CHK_STALE
                    elif (by_day and <int32_t>pf_ld32(&out[i, PFW_DAY]) != want_day) or \
                            (by_terminal and pf_ld32(&out[i, PFW_TERMINAL]) != want_terminal) or \
                            (by_kind and out[i, PFW_KIND] != want_kind):
                        status[i] = CHK_FILTER
        return status_arr

    cdef void _decode_at(self, uint64_t pos, uint8_t *row) noexcept nogil:
        # one checked record into a RECORD_DTYPE row (its extension may wrap the ring end)
        cdef const uint8_t *h = self._head_of(pos)
        cdef uint32_t elen = self._ext_len(h)
        cdef uint8_t tmp[256]   # PF_MAX_EXT + 1
        cdef const uint8_t *ext = NULL
        cdef uint64_t ring_bytes, start, first
        if elen > PF_MAX_EXT:
            elen = 0            # overwritten meanwhile (a reader): the caller's re-check drops it
        if elen:
            ring_bytes = self.capacity * self.slot_size
            start = self._slot(pos) * self.slot_size + PFR_HEAD_SIZE
            if start >= ring_bytes:
                start -= ring_bytes
            if start + elen <= ring_bytes:
                ext = self.map + PF_DATA_OFFSET + start
            else:
                first = ring_bytes - start
                memcpy(tmp, self.map + PF_DATA_OFFSET + start, first)
                memcpy(tmp + first, self.map + PF_DATA_OFFSET, elen - first)
                ext = tmp
        _decode_head(h, ext, elen, row, self.version, self.day_offset_min, self.day_start_min)

    cdef bytes _ext_at(self, uint64_t pos):
        cdef const uint8_t *h = self._head_of(pos)
        cdef uint64_t elen = self._ext_len(h)
        cdef uint64_t ring_bytes = self.capacity * self.slot_size
        cdef uint64_t start = self._slot(pos) * self.slot_size + PFR_HEAD_SIZE
        cdef uint64_t first
        if elen == 0 or elen > PF_MAX_EXT or PFR_HEAD_SIZE + elen > ring_bytes:
            return b""          # (bounded: a reader's writer may overwrite the slot meanwhile)
        if start >= ring_bytes:
            start -= ring_bytes
        first = elen if start + elen <= ring_bytes else ring_bytes - start
        if first == elen:
            return PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET + start, elen)
        return (PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET + start, first)
                + PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET, elen - first))

    def exts(self, const uint64_t[::1] seqs):
        """Extension bytes of each seq (v2: client_ref, order_ref, host_ref as `decode_ext`
        reads them; b"" where a record has none, or is not live and intact)."""
        cdef uint64_t i, seq, pos
        out = []
        for i in range(<uint64_t>seqs.shape[0]):
            seq = seqs[i]
            pos = self._pos(seq) if self.oldest_seq <= seq <= self.head_seq else 0
            if pos and self._check_at(pos, seq) == CHK_OK:
                ext = self._ext_at(pos)
                out.append(ext if self.writable or self._check_at(pos, seq) == CHK_OK else b"")
            else:
                out.append(b"")
        return out

    cdef bytes _payload_at(self, uint64_t pos):
        cdef uint64_t slot = (pos - 1) % self.capacity
        cdef const uint8_t *h = self._slot_ptr(slot)
        # The lengths are read once and bounded: on a read-only handle the writer may overwrite
        # the slot between the caller's check and this copy (the caller checks again after).
        cdef uint64_t plen = pf_ld16(h + PFR_PAYLOAD_LEN)
        cdef uint64_t elen = self._ext_len(h)
        cdef uint64_t ring_bytes = self.capacity * self.slot_size
        cdef uint64_t start, first
        if plen == 0 or plen > self.max_payload or elen > PF_MAX_EXT \
                or PFR_HEAD_SIZE + elen + plen > ring_bytes:
            return b""
        start = (slot * self.slot_size + PFR_HEAD_SIZE + elen) % ring_bytes
        first = plen if start + plen <= ring_bytes else ring_bytes - start
        if first == plen:
            return PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET + start, plen)
        return (PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET + start, first)
                + PyBytes_FromStringAndSize(<const char *>self.map + PF_DATA_OFFSET, plen - first))

    def check(self, uint64_t seq):
        """Status code of one live seq (0 ok, else a key of CAUSES)."""
        cdef uint64_t pos
        if seq < self.oldest_seq or seq > self.head_seq:
            return CHK_STALE
        pos = self._pos(seq)
        if pos == 0:
            return CHK_MISSING
        return self._check_at(pos, seq)

    def get(self, uint64_t seq):
        """The Record of a live seq; KeyError if not live, CorruptRecord if damaged."""
        cdef uint64_t pos
        cdef int r
        cdef uint8_t row[120]   # PFW_SIZE
        if self.fd < 0:
            raise JournalClosed("posfast: journal %s is closed" % (self.path,))
        if seq < self.oldest_seq or seq > self.head_seq or seq == 0:
            raise KeyError(seq)
        pos = self._pos(seq)
        r = self._check_at(pos, seq) if pos else CHK_MISSING
        if r != CHK_OK and not self.writable:
            # A reader's view lags the writer: if the writer has lapped the record since
            # (its slot now holds a newer record or a newer record's payload), it is gone.
            # Look without moving this handle on: the Journal indexes only what refresh() adds.
            if r == CHK_STALE or (pos and self._overwritten_since(pos)):
                raise KeyError(seq)
        if r != CHK_OK:
            raise CorruptRecord("posfast: record seq %d of %s (slot %s) is damaged: %s. It is not "
                                "returned; run `posfast verify` and restore it from the back office."
                                % (seq, self.path, (pos - 1) % self.capacity if pos else "?",
                                   CAUSES[r]))
        self._decode_at(pos, row)
        order_ref = host_ref = ""
        # an extension of the client_ref alone (the usual one) is in the row already
        ext = self._ext_at(pos) if row[PFW_EXT_LEN] != _client_ext_len(row) else None
        if ext:
            try:
                _, order_ref, host_ref = decode_ext(ext)
                order_ref = order_ref.decode("utf-8", "replace")
                host_ref = host_ref.decode("utf-8", "replace")
            except ValueError as exc:
                if not self.writable and self._check_at(pos, seq) != CHK_OK:
                    raise KeyError(seq)     # overwritten by the writer while we copied it: gone
                raise CorruptRecord("posfast: record seq %d of %s has an extension posfast never "
                                    "writes (%s); run `posfast verify`" % (seq, self.path, exc))
        rec = Record._from_row(row, self._payload_at(pos),
                               PyBytes_FromStringAndSize(<const char *>self._head_of(pos) + PFR_LINK, 16),
                               False, order_ref, host_ref)
        if not self.writable and self._check_at(pos, seq) != CHK_OK:
            raise KeyError(seq)      # overwritten by the writer while we copied it: gone
        return rec

    def payloads(self, const uint64_t[::1] seqs):
        """Payload bytes of each seq (b"" for seqs that are not live and intact)."""
        cdef uint64_t i, seq, pos
        out = []
        for i in range(<uint64_t>seqs.shape[0]):
            seq = seqs[i]
            pos = self._pos(seq) if self.oldest_seq <= seq <= self.head_seq else 0
            if pos and self._check_at(pos, seq) == CHK_OK:
                payload = self._payload_at(pos)
                # a reader re-checks: the writer may have overwritten it while we copied
                out.append(payload if self.writable or self._check_at(pos, seq) == CHK_OK else b"")
            else:
                out.append(b"")
        return out

    def links(self, const uint64_t[::1] seqs):
        cdef uint64_t i, seq, pos
        out = []
        for i in range(<uint64_t>seqs.shape[0]):
            seq = seqs[i]
            pos = self._pos(seq) if self.oldest_seq <= seq <= self.head_seq else 0
            if pos and self._check_at(pos, seq) == CHK_OK:
                link = PyBytes_FromStringAndSize(<const char *>self._head_of(pos) + PFR_LINK, 16)
                out.append(link if self.writable or self._check_at(pos, seq) == CHK_OK else None)
            else:
                out.append(None)
        return out

    def positions(self):
        """Positions of the live seqs oldest..head as a uint64 array (for the index file)."""
        import numpy
        cdef uint64_t n = self.live_records, i
        arr = numpy.zeros(n, dtype=numpy.uint64)
        cdef uint64_t[::1] view = arr
        for i in range(n):
            view[i] = self._pos(self.oldest_seq + i)
        return arr

    # ------------------------------------------------------------------ verify
    def verify(self):
        """Check every live record: checksum, seq, position, commit group and the hash chain,
        then every other slot for valid records no single writer could have left.

        Returns (checked, problems) with problems as (seq, slot, code, detail).
        """
        cdef uint8_t *live
        problems = []
        if self.fd < 0:
            raise JournalClosed("posfast: journal %s is closed" % (self.path,))
        live = <uint8_t *>calloc(self.capacity, 1)     # 1 = slot of a checked live record
        if live == NULL:
            raise MemoryError("posfast: verify of %s needs %d bytes" % (self.path, self.capacity))
        try:
            checked = self._verify_live(live, problems)
            self._verify_others(live, problems)
        finally:
            free(live)
        return checked, problems

    cdef uint64_t _verify_live(self, uint8_t *live, list problems) except? 0:
        cdef uint64_t seq, pos, checked = 0
        cdef int r
        cdef bint have_prev
        cdef uint8_t prev[16]
        cdef uint8_t link[16]
        cdef const uint8_t *h
        cdef uint64_t plen, slot, start, ring_bytes = self.capacity * self.slot_size, first, k
        cdef uint64_t prev_pos = 0     # (a reader re-checks: evicted under it is not damage)
        cdef long prev_group_off = -1, group_off
        for seq, slot, detail in self.damaged:
            if seq == 0 or seq < self.oldest_seq:
                problems.append((seq, slot, CHK_MISSING, detail))
        have_prev = False
        if self.oldest_seq == 1:
            g = genesis_link(bytes(self.jid[:16]))
            memcpy(prev, PyBytes_AS_STRING(g), 16)
            have_prev = True
        seq = self.oldest_seq
        while seq <= self.head_seq:
            pos = self._pos(seq)
            if pos == 0:
                problems.append((seq, None, CHK_MISSING, CAUSES[CHK_MISSING]))
                have_prev = False
                prev_group_off = -1
                seq += 1
                continue
            slot = (pos - 1) % self.capacity
            with nogil:
                r = self._check_at(pos, seq)
            if r != CHK_OK and not self.writable and self._overwritten_since(pos):
                have_prev = False       # a reader's view lags: the writer evicted it since
                prev_group_off = -1
                seq += 1
                continue
            if r != CHK_OK:
                detail = CAUSES[r]
                if r == CHK_STALE:
                    detail += " (holds seq %d)" % pf_ld64(self._head_of(pos) + PFR_SEQ)
                problems.append((seq, slot, r, detail))
                have_prev = False
                prev_group_off = -1
                seq += 1
                continue
            checked += 1
            h = self._head_of(pos)
            for k in range(self._nslots_at(pos)):
                live[(slot + k) % self.capacity] = 1
            # one writer numbers a commit group 0, 1, 2 ...: a record follows its predecessor
            # in the group or starts a new one
            group_off = pf_ld16(h + PFR_GROUP_OFF)
            if prev_group_off >= 0 and group_off != 0 and group_off != prev_group_off + 1 \
                    and not (not self.writable and self._overwritten_since(prev_pos or pos)):
                # (a reader's view lags: the writer may have overwritten either record since)
                problems.append((seq, slot, CHK_GROUP, "%s: it is record %d of its group, the "
                                 "record before it is record %d of its own"
                                 % (CAUSES[CHK_GROUP], group_off, prev_group_off)))
            prev_group_off = group_off
            if have_prev:
                plen = self._body_len(h)
                start = slot * self.slot_size + PFR_HEAD_SIZE
                if start >= ring_bytes:
                    start -= ring_bytes
                first = plen if start + plen <= ring_bytes else ring_bytes - start
                with nogil:
                    _link_of(prev, h, self.map + PF_DATA_OFFSET + start, first,
                             self.map + PF_DATA_OFFSET, plen - first, link)
                if memcmp(link, h + PFR_LINK, 16) != 0 and not (
                        not self.writable and self._overwritten_since(prev_pos or pos)):
                    problems.append((seq, slot, CHK_CHAIN, CAUSES[CHK_CHAIN]))
            memcpy(prev, h + PFR_LINK, 16)
            prev_pos = pos
            have_prev = True
            seq += 1
        return checked

    cdef int _verify_others(self, const uint8_t *live, list problems) except -1:
        # One writer leaves, outside its live records, only zeros, payload bytes and intact
        # records of earlier laps (older seqs at lower positions) or of a torn tail (newer seqs
        # ahead of it).  Two writers on one file, an edited file or a backup restored over a
        # newer copy leave valid records that break that order: a live seq stored a second
        # time, an old seq past the newest record, a newer seq behind it.  Damage never passes
        # the CRC check, so it never shows here.
        cdef uint64_t slot, pos, seq, end_pos = self.next_pos
        cdef uint64_t first_live_pos = self._pos(self.oldest_seq) \
            if self.head_seq >= self.oldest_seq else end_pos
        cdef const uint8_t *h
        cdef int r
        for slot in range(self.avail_slots):
            if live[slot]:
                continue
            h = self._slot_ptr(slot)
            pos = pf_ld64(h + PFR_POS)
            if pos == 0 or (pos - 1) % self.capacity != slot:
                continue
            with nogil:
                r = self._check_at(pos, 0)
            if r != CHK_OK:
                continue
            seq = pf_ld64(h + PFR_SEQ)
            if self.oldest_seq <= seq <= self.head_seq:
                if not self.writable and self._overwritten_since(self._pos(seq) or pos):
                    continue
                where = "seq %d is stored a second time, with other contents, at position %d " \
                        "(the live one is at position %d)" % (
                            seq, pos, self._pos(seq))
            elif seq < self.oldest_seq and first_live_pos and pos >= first_live_pos:
                where = "an older record, seq %d, lies at position %d, after the oldest live " \
                        "record (position %d)" % (seq, pos, first_live_pos)
            elif seq > self.head_seq and pos < end_pos:
                where = "a newer record, seq %d, lies at position %d, before the end of the " \
                        "newest one (position %d)" % (seq, pos, end_pos)
            else:
                continue
            problems.append((seq, slot, CHK_CONFLICT, "%s: %s" % (CAUSES[CHK_CONFLICT], where)))
        return 0
