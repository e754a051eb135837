#!/usr/bin/python3
"""gst-whep-peer: the GStreamer reference peer for the wl-webrtc latency benchmark.

Reads raw BGRx frames (wl_shm XRGB8888 little-endian, W*H*4 bytes each, no header) from stdin and serves them to
ONE browser over WHEP, encoded by GStreamer 1.22 (Debian 12) x264enc and sent by webrtcbin:

    appsrc (is-live, do-timestamp, format=time, leaky downstream, max 1 frame)
      ! videoconvert n-threads=2 ! video/x-raw,format=I420
      ! x264enc speed-preset=ultrafast tune=zerolatency bitrate=KBPS key-int-max=2*FPS threads=2
      ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au
      ! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=<the offer's H.264 pm=1 42e01f PT>
      ! application/x-rtp,... ! webrtcbin bundle-policy=max-bundle latency=0

Usage:  gst-whep-peer.py --listen 127.0.0.1:PORT --width W --height H --fps F --bitrate KBPS

HTTP:   POST /whep (application/sdp offer, complete with candidates) -> 201, SDP answer (all candidates),
        Location: /whep/<n> (n counts up from 1);  DELETE /whep/<n> -> 200;  OPTIONS -> 204 (CORS).
        One viewer at a time: a new POST replaces (tears down) the current viewer.
stdout: exactly one line "gst-whep-peer: ready http://HOST:PORT/whep" once serving; everything else on stderr.
Exit:   0 on stdin EOF / SIGTERM / SIGINT (< 2 s); 2 if GStreamer, a plugin or PyGObject is missing.

Design notes (see the long comments below):
 * One GStreamer pipeline per viewer, built when the offer arrives (the offer decides the RTP payload type; a
   fresh encoder also means the viewer's first frame is an IDR). Frames are pushed only once the viewer's DTLS
   connection is up; before that (and with no viewer) they are read and dropped, except that the most recent
   frame is kept and pushed at connect time so a static screen still shows up at once.
 * No queue elements: appsrc's own one-frame queue (leaky downstream = newest frame wins) is the only buffer
   between the stdin reader and the encoder thread; convert/encode/payload/SRTP run in appsrc's streaming thread
   (webrtcbin adds its own leaky queue before its nicesink, which has sync=false).
 * webrtcbin 1.22 answers H.264 without profile-level-id: the answer sent to the browser gets the offer's back.
 * PLI/FIR from the browser -> rtpsession sends GstForceKeyUnit upstream -> rtph264pay -> x264enc -> IDR.
   key-int-max=2*fps is the fallback.
 * Frames are read straight into GstBuffer memory (ctypes: gst_buffer_new_allocate/map + readinto), and pushed
   with gst_app_src_push_buffer: no Python-level copy of the 8 MB 1080p frames.
"""
import argparse
import ctypes
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROG = 'gst-whep-peer'


def log(*args):
    print(f'{PROG}:', *args, file=sys.stderr, flush=True)


def missing(what, package):
    log(f'ERROR: {what} is missing: install the Debian package {package} (apt-get install {package})')
    sys.stderr.flush()
    os._exit(2)


# ---------------------------------------------------------------------------------------------------------------
# Imports. PyGObject only exists for Debian's /usr/bin/python3: if `python3` on PATH is another interpreter (pyenv,
# venv without system site-packages), re-exec ourselves with /usr/bin/python3 (same PID).
try:
    import gi
except ImportError:
    sysp = '/usr/bin/python3'
    if os.path.exists(sysp) and os.path.realpath(sys.executable) != os.path.realpath(sysp) \
            and not os.environ.get('GST_WHEP_PEER_REEXEC'):
        os.environ['GST_WHEP_PEER_REEXEC'] = '1'
        os.execv(sysp, [sysp] + sys.argv)
    missing('PyGObject (python module gi)', 'python3-gi')

for _ns, _pkg in (('Gst', 'gir1.2-gstreamer-1.0'), ('GstSdp', 'gir1.2-gst-plugins-base-1.0'),
                  ('GstWebRTC', 'gir1.2-gst-plugins-bad-1.0')):
    try:
        gi.require_version(_ns, '1.0')
    except ValueError:
        missing(f'GObject introspection data for {_ns} 1.0', _pkg)
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

Gst.init(None)

# element -> Debian package that ships it
NEEDED_ELEMENTS = {
    'appsrc': 'gstreamer1.0-plugins-base', 'videoconvert': 'gstreamer1.0-plugins-base',
    'x264enc': 'gstreamer1.0-plugins-ugly',
    'rtph264pay': 'gstreamer1.0-plugins-good', 'rtpbin': 'gstreamer1.0-plugins-good',
    'webrtcbin': 'gstreamer1.0-plugins-bad', 'dtlssrtpenc': 'gstreamer1.0-plugins-bad',
    'srtpenc': 'gstreamer1.0-plugins-bad',
    'nicesink': 'gstreamer1.0-nice', 'nicesrc': 'gstreamer1.0-nice',
}


def check_elements():
    for name, pkg in NEEDED_ELEMENTS.items():
        if Gst.ElementFactory.find(name) is None:
            missing(f'GStreamer element {name}', pkg)


# ---------------------------------------------------------------------------------------------------------------
# ctypes helpers: zero-copy frame path and the webrtcbin ice-agent reference fix.
class GstMapInfo(ctypes.Structure):
    _fields_ = [('memory', ctypes.c_void_p), ('flags', ctypes.c_int), ('data', ctypes.c_void_p),
                ('size', ctypes.c_size_t), ('maxsize', ctypes.c_size_t), ('user_data', ctypes.c_void_p * 4),
                ('_gst_reserved', ctypes.c_void_p * 4)]


GST_MAP_WRITE = 2
try:
    _gst = ctypes.CDLL('libgstreamer-1.0.so.0')
    _gstapp = ctypes.CDLL('libgstapp-1.0.so.0')
    _gobject = ctypes.CDLL('libgobject-2.0.so.0')
except OSError as e:
    log(f'ERROR: {e}')
    missing('libgstapp-1.0.so.0', 'libgstreamer-plugins-base1.0-0')
_gst.gst_buffer_new_allocate.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_gst.gst_buffer_new_allocate.restype = ctypes.c_void_p
_gst.gst_buffer_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(GstMapInfo), ctypes.c_int]
_gst.gst_buffer_map.restype = ctypes.c_int
_gst.gst_buffer_unmap.argtypes = [ctypes.c_void_p, ctypes.POINTER(GstMapInfo)]
_gst.gst_buffer_unmap.restype = None
_gst.gst_buffer_ref.argtypes = [ctypes.c_void_p]
_gst.gst_buffer_ref.restype = ctypes.c_void_p
_gst.gst_buffer_unref.argtypes = [ctypes.c_void_p]
_gst.gst_buffer_unref.restype = None
_gstapp.gst_app_src_push_buffer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]  # takes ownership of the buffer
_gstapp.gst_app_src_push_buffer.restype = ctypes.c_int
_gobject.g_object_ref.argtypes = [ctypes.c_void_p]
_gobject.g_object_ref.restype = ctypes.c_void_p


def gobject_ptr(obj):
    # PyGObject's hash() of a GObject wrapper is the address of the C object.
    return hash(obj)


# ---------------------------------------------------------------------------------------------------------------
def choose_h264_pt(sdp):
    """Payload type of the offer's H.264 packetization-mode=1 video codec: 42e01f preferred, then any baseline/
    constrained-baseline (42xxxx) profile. Returns (pt, profile-level-id) or (None, None)."""
    video = False
    rtpmap, fmtp = {}, {}
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith('m='):
            video = line.startswith('m=video')
            continue
        if not video:
            continue
        m = re.match(r'a=rtpmap:(\d+) ([^/]+)/(\d+)', line)
        if m:
            rtpmap[int(m.group(1))] = m.group(2).upper()
            continue
        m = re.match(r'a=fmtp:(\d+) (.*)', line)
        if m:
            params = dict(kv.split('=', 1) for kv in m.group(2).split(';') if '=' in kv)
            fmtp[int(m.group(1))] = {k.strip().lower(): v.strip() for k, v in params.items()}
    candidates = []
    for pt, name in rtpmap.items():
        p = fmtp.get(pt, {})
        plid = p.get('profile-level-id', '42000a').lower()
        if name != 'H264' or p.get('packetization-mode') != '1' or not plid.startswith('42'):
            continue
        candidates.append((0 if plid == '42e01f' else 1, list(rtpmap).index(pt), pt, plid))
    if not candidates:
        return None, None
    candidates.sort()
    return candidates[0][2], candidates[0][3]


# The one address ICE uses: the host of --listen (127.0.0.1 on loopback; the far side of bench e2e --link).
LOCAL_IP = '127.0.0.1'


def only_local_candidates(sdp, address=None):
    """Keep the candidates on `address` (default LOCAL_IP), or with address='ipv4' every IPv4 one (a remote
    offer's: mDNS names libnice cannot resolve go)."""
    want = address or LOCAL_IP
    out = []
    for line in sdp.splitlines():
        if line.startswith('a=candidate:'):
            parts = line.split()
            ok = len(parts) >= 5 and (re.fullmatch(r'\d+\.\d+\.\d+\.\d+', parts[4]) if want == 'ipv4' else parts[4] == want)
            if not ok:
                continue
        out.append(line)
    return '\r\n'.join(out) + '\r\n'


def fix_answer_fmtp(sdp, pt, plid):
    """webrtcbin 1.22 answers 'a=fmtp:PT packetization-mode=1;level-asymmetry-allowed=1' without profile-level-id,
    which means 42000a (Baseline) and does not match the offered Constrained Baseline codec: put the offer's
    profile-level-id back."""
    out = []
    for line in sdp.split('\r\n'):
        if line.startswith(f'a=fmtp:{pt} ') and 'profile-level-id' not in line:
            line += f';profile-level-id={plid}'
        out.append(line)
    return '\r\n'.join(out)


# ---------------------------------------------------------------------------------------------------------------
class Session:
    """One viewer: its own pipeline appsrc ! videoconvert ! x264enc ! rtph264pay ! webrtcbin."""

    def __init__(self, peer, sid, pt, plid):
        self.peer, self.sid, self.pt, self.plid = peer, sid, pt, plid
        a = peer.args
        self.connected = False          # DTLS up: frames flow
        self.closed = False
        self.stats = dict(pushed=0, encoded=0, keyframes=0, key_requests=0)
        self.t_created = time.monotonic()
        self.t_connected = None
        self.gathered = threading.Event()
        self.local_candidates = []
        self.lock = threading.Lock()
        # No queue elements: appsrc's internal queue (max 1 frame, leaky downstream: drop the older frame when the
        # encoder is still busy) is the only buffering between the stdin reader thread and the streaming thread;
        # videoconvert, x264enc, rtph264pay and webrtcbin's rtpbin/SRTP all run in appsrc's streaming thread. (webrtcbin
        # itself puts a leaky queue in front of its nicesink, sync=false: that hop is GStreamer's, not ours.)
        # Another queue would only add a frame of latency and a thread hop.
        desc = (
            f'appsrc name=src is-live=true do-timestamp=true format=time block=false '
            f'max-buffers=1 max-bytes=0 max-time=0 leaky-type=downstream '
            f'caps=video/x-raw,format=BGRx,width={a.width},height={a.height},framerate={a.fps}/1 '
            f'! videoconvert n-threads={a.convert_threads} ! video/x-raw,format=I420 '
            f'! x264enc name=enc speed-preset=ultrafast tune=zerolatency bitrate={a.bitrate} '
            f'key-int-max={2 * a.fps} threads=2 '
            f'! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au '
            f'! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt={pt} '
            f'! application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload={pt} '
            f'! webrtcbin name=webrtc bundle-policy=max-bundle latency=0')
        self.pipeline = Gst.parse_launch(desc)
        self.pipeline.set_name(f'viewer{sid}')
        self.appsrc = self.pipeline.get_by_name('src')
        self.appsrc_ptr = gobject_ptr(self.appsrc)
        self.webrtc = self.pipeline.get_by_name('webrtc')
        enc = self.pipeline.get_by_name('enc')

        # libnice never gathers loopback addresses by itself: give it LOCAL_IP explicitly. With an explicit local
        # address libnice gathers ONLY the given addresses (no other interface is used). GStreamer 1.22 trap:
        # webrtcbin's 'ice-agent' is still a floating GstObject and PyGObject sinks/steals that ref, so the agent
        # would be destroyed under webrtcbin when the wrapper dies -> take an extra C reference first.
        self.ice = self.webrtc.get_property('ice-agent')
        _gobject.g_object_ref(gobject_ptr(self.ice))
        self.ice.emit('add-local-ip-address', LOCAL_IP)
        try:
            self.ice.set_property('ice-tcp', False)
        except TypeError:
            pass

        self.handlers = [self.webrtc.connect('on-ice-candidate', self._on_ice_candidate),
                         self.webrtc.connect('notify::ice-gathering-state', self._on_gathering),
                         self.webrtc.connect('notify::connection-state', self._on_connection_state),
                         self.webrtc.connect('notify::ice-connection-state', self._on_ice_state)]
        self.enc_src = enc.get_static_pad('src')
        self.probes = [self.enc_src.add_probe(Gst.PadProbeType.BUFFER, self._on_encoded),
                       self.enc_src.add_probe(Gst.PadProbeType.EVENT_UPSTREAM, self._on_upstream_event)]

        self.bus = self.pipeline.get_bus()
        self.bus_watch = self.bus.add_watch(GLib.PRIORITY_DEFAULT, self._on_bus)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError('pipeline failed to go to PLAYING')

    # -- callbacks (webrtcbin / streaming threads) --
    def _on_ice_candidate(self, _w, mline, cand):
        self.local_candidates.append((mline, cand))

    def _on_gathering(self, w, _p):
        if w.get_property('ice-gathering-state') == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.gathered.set()

    def _on_ice_state(self, w, _p):
        log(f'viewer {self.sid}: ICE {w.get_property("ice-connection-state").value_nick}')

    def _on_connection_state(self, w, _p):
        st = w.get_property('connection-state')
        log(f'viewer {self.sid}: connection {st.value_nick}')
        if st == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.t_connected = time.monotonic()
            log(f'viewer {self.sid}: connected {1000 * (self.t_connected - self.t_created):.0f} ms after offer')
            self.connected = True
            self.peer.push_last_frame(self)
        elif st in (GstWebRTC.WebRTCPeerConnectionState.FAILED, GstWebRTC.WebRTCPeerConnectionState.CLOSED):
            GLib.idle_add(self.peer.drop_session, self, f'connection {st.value_nick}')

    def _on_encoded(self, _pad, info):
        buf = info.get_buffer()
        self.stats['encoded'] += 1
        if not buf.has_flags(Gst.BufferFlags.DELTA_UNIT):
            self.stats['keyframes'] += 1
            if self.stats['keyframes'] > 1:
                log(f'viewer {self.sid}: keyframe #{self.stats["keyframes"]} (encoded frame {self.stats["encoded"]})')
        return Gst.PadProbeReturn.OK

    def _on_upstream_event(self, _pad, info):
        ev = info.get_event()
        s = ev.get_structure()
        if s is not None and s.get_name() == 'GstForceKeyUnit':
            self.stats['key_requests'] += 1
            log(f'viewer {self.sid}: keyframe requested by the viewer (PLI/FIR), request #{self.stats["key_requests"]}')
        return Gst.PadProbeReturn.OK

    def _on_bus(self, _bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log(f'viewer {self.sid}: ERROR from {msg.src.get_name()}: {err.message} ({dbg})')
            self.peer.drop_session(self, 'pipeline error')
            return False
        if msg.type == Gst.MessageType.WARNING:
            err, dbg = msg.parse_warning()
            log(f'viewer {self.sid}: warning from {msg.src.get_name()}: {err.message}')
        return True

    # -- signalling (HTTP thread) --
    def _call(self, signal_name, *args, want=None):
        """Emit a webrtcbin action signal and wait for its promise. Returns (value, keep): the caller must keep
        `keep` alive while it uses the value. PyGObject trap: the boxed value returned by reply.get_value() points
        INTO the reply structure (no copy), so it dies with the Python wrapper of the reply -> webrtcbin later
        reads a freed description ('gst_sdp_message_copy: assertion msg != NULL' in set-local-description)."""
        p = Gst.Promise.new()
        self.webrtc.emit(signal_name, *args, p)
        if p.wait() != Gst.PromiseResult.REPLIED:
            raise RuntimeError(f'{signal_name}: no reply')
        reply = p.get_reply()
        if reply is not None and reply.has_field('error'):
            raise RuntimeError(f'{signal_name}: {reply.get_value("error")}')
        v = None
        if want:
            v = reply.get_value(want) if reply is not None else None
            if v is None:
                raise RuntimeError(f'{signal_name}: no {want}')
        return v, (p, reply)

    def negotiate(self, offer_text, gather_timeout=3.0):
        # On loopback only the browser's 127.0.0.1 candidate can work; across a link, any IPv4 one.
        offer_text = only_local_candidates(offer_text, None if LOCAL_IP.startswith('127.') else 'ipv4')
        res, msg = GstSdp.SDPMessage.new_from_text(offer_text)
        if res != GstSdp.SDPResult.OK:
            raise ValueError('cannot parse the SDP offer')
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, msg)
        _, p1 = self._call('set-remote-description', offer)
        answer, p2 = self._call('create-answer', None, want='answer')
        _, p3 = self._call('set-local-description', answer)
        if not self.gathered.wait(gather_timeout):
            log(f'viewer {self.sid}: ICE gathering not complete after {gather_timeout} s, answering with '
                f'{len(self.local_candidates)} candidate(s)')
        sdp = self.webrtc.get_property('local-description').sdp.as_text()
        if 'a=candidate:' not in sdp and self.local_candidates:
            # Put the gathered candidates into the first (bundled) media section ourselves.
            lines = sdp.rstrip('\r\n').split('\r\n')
            first_m = next(i for i, l in enumerate(lines) if l.startswith('m='))
            end = next((i for i in range(first_m + 1, len(lines)) if lines[i].startswith('m=')), len(lines))
            lines[end:end] = ['a=' + c for m, c in self.local_candidates if m == 0] + ['a=end-of-candidates']
            sdp = '\r\n'.join(lines) + '\r\n'
        del p1, p2, p3
        return fix_answer_fmtp(only_local_candidates(sdp), self.pt, self.plid)

    def stop(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.connected = False
        self.pipeline.set_state(Gst.State.NULL)
        # Break the Python <-> GObject reference cycles (signal closures and probes hold bound methods of self),
        # else every viewer leaks its webrtcbin with its two threads (webrtc:pc, webrtc:ice) and ~13 fds.
        for h in self.handlers:
            self.webrtc.disconnect(h)
        for pr in self.probes:
            self.enc_src.remove_probe(pr)
        if self.bus_watch:
            GLib.source_remove(self.bus_watch)
        self.handlers, self.probes, self.bus_watch = [], [], None
        self.pipeline = self.appsrc = self.webrtc = self.ice = self.enc_src = self.bus = None
        s = self.stats
        streamed = f'streamed {time.monotonic() - self.t_connected:.1f} s' if self.t_connected else 'never connected'
        log(f'viewer {self.sid} closed: {streamed}, frames pushed={s["pushed"]} encoded={s["encoded"]} '
            f'(dropped by the leaky 1-frame appsrc queue: {s["pushed"] - s["encoded"]}) keyframes={s["keyframes"]} '
            f'keyframe requests={s["key_requests"]}')


class Peer:
    def __init__(self, args):
        self.args = args
        self.frame_size = args.width * args.height * 4
        self.session = None
        self.next_sid = 1
        self.signalling = threading.Lock()   # serialises POST/DELETE/teardown
        self.push_lock = threading.Lock()
        self.last_frame = None               # GstBuffer* (C pointer) of the newest frame, we hold one ref
        self.frames_read = 0
        self.loop = GLib.MainLoop()
        self.httpd = None
        self.stopping = False

    # -- frames --
    def read_frames(self):
        size = self.frame_size
        f = open(sys.stdin.fileno(), 'rb', buffering=0, closefd=False)
        try:  # a pipe buffer of up to 1 MiB means fewer wake-ups per frame (not a frame of queueing)
            import fcntl
            fcntl.fcntl(f.fileno(), 1031, min(size, 1 << 20))  # F_SETPIPE_SZ
        except OSError:
            pass
        info = GstMapInfo()
        while True:
            buf = _gst.gst_buffer_new_allocate(None, size, None)
            if not buf or not _gst.gst_buffer_map(buf, ctypes.byref(info), GST_MAP_WRITE):
                log('ERROR: cannot allocate a frame buffer')
                break
            view = memoryview((ctypes.c_ubyte * size).from_address(info.data)).cast('B')
            got = 0
            try:
                while got < size:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
            except OSError as e:
                log(f'stdin read error: {e}')
            del view
            _gst.gst_buffer_unmap(buf, ctypes.byref(info))
            if got < size:
                _gst.gst_buffer_unref(buf)
                if got:
                    log(f'stdin EOF inside a frame ({got} of {size} bytes), dropped it')
                break
            self.frames_read += 1
            self.on_frame(buf)
        GLib.idle_add(self.shutdown, 'stdin EOF')

    def on_frame(self, buf):
        with self.push_lock:
            old, self.last_frame = self.last_frame, buf
            s = self.session
            if s is not None and s.connected:
                self._push(s, buf)
        if old:
            _gst.gst_buffer_unref(old)

    def _push(self, s, buf):
        # push_lock held. appsrc takes ownership of one ref; we keep ours as last_frame. (With two refs appsrc's
        # do-timestamp stamps a shallow copy, so the kept frame never carries a stale timestamp.)
        s.stats['pushed'] += 1
        _gstapp.gst_app_src_push_buffer(s.appsrc_ptr, _gst.gst_buffer_ref(buf))

    def push_last_frame(self, s):
        # A viewer just connected: show the current screen at once even if it is static.
        with self.push_lock:
            if self.last_frame and self.session is s and s.connected:
                self._push(s, self.last_frame)

    # -- viewers --
    def new_session(self, offer):
        pt, plid = choose_h264_pt(offer)
        if pt is None:
            raise LookupError('the offer has no H.264 packetization-mode=1 baseline (42xxxx) video codec')
        with self.signalling:
            if self.stopping:
                raise RuntimeError('shutting down')
            if self.session is not None:
                log(f'new viewer replaces viewer {self.session.sid}')
                self._drop_locked(self.session)
            sid = self.next_sid
            self.next_sid += 1
            s = Session(self, sid, pt, plid)
            log(f'viewer {sid}: offer H.264 pt={pt} profile-level-id={plid}')
            self.session = s
            try:
                answer = s.negotiate(offer)
            except Exception:
                self._drop_locked(s)
                raise
            return sid, answer

    def _drop_locked(self, s):
        with self.push_lock:
            if self.session is s:
                self.session = None
        s.stop()

    def drop_session(self, s, reason=''):
        with self.signalling:
            if not s.closed:
                log(f'viewer {s.sid}: dropped ({reason})')
                self._drop_locked(s)
        return False

    def delete(self, sid):
        with self.signalling:
            s = self.session
            if s is None or s.sid != sid:
                return False
            self._drop_locked(s)
            return True

    # -- lifecycle --
    def shutdown(self, reason):
        if self.stopping:
            return False
        self.stopping = True
        log(f'stopping ({reason}); {self.frames_read} frames read from stdin')
        # Hard deadline: whatever hangs, exit 0 within 2 s.
        t = threading.Timer(1.5, lambda: (log('teardown timed out, exiting'), os._exit(0)))
        t.daemon = True
        t.start()
        if self.httpd:
            threading.Thread(target=self.httpd.shutdown, daemon=True).start()
        with self.signalling:
            if self.session is not None:
                self._drop_locked(self.session)
        self.loop.quit()
        return False


def make_handler(peer):
    class Handler(BaseHTTPRequestHandler):
        server_version = PROG
        protocol_version = 'HTTP/1.1'

        def log_message(self, fmt, *args):
            log('http:', fmt % args)

        def end_headers(self):
            self.send_header('Access-Control-Allow-Origin', '*')
            self.send_header('Access-Control-Allow-Methods', 'POST, DELETE, OPTIONS')
            self.send_header('Access-Control-Allow-Headers', 'content-type, authorization')
            self.send_header('Access-Control-Expose-Headers', 'Location')
            super().end_headers()

        def _reply(self, code, body=b'', ctype='text/plain', extra=()):
            if isinstance(body, str):
                body = body.encode()
            self.send_response(code)
            if body:
                self.send_header('Content-Type', ctype)
            for k, v in extra:
                self.send_header(k, v)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_OPTIONS(self):
            self._reply(204)

        def do_POST(self):
            n = int(self.headers.get('Content-Length') or 0)
            body = self.rfile.read(n).decode('utf-8', 'replace') if n else ''
            if self.path.rstrip('/') != '/whep':
                return self._reply(404, 'not found\n')
            if 'application/sdp' not in (self.headers.get('Content-Type') or ''):
                return self._reply(415, 'Content-Type must be application/sdp\n')
            try:
                sid, answer = peer.new_session(body)
            except LookupError as e:
                return self._reply(406, f'{e}\n')
            except Exception as e:  # noqa: BLE001
                log(f'POST /whep failed: {e}')
                return self._reply(500, f'{e}\n')
            self._reply(201, answer, 'application/sdp', [('Location', f'/whep/{sid}')])

        def do_DELETE(self):
            m = re.fullmatch(r'/whep/(\d+)/?', self.path)
            if m and peer.delete(int(m.group(1))):
                return self._reply(200)
            self._reply(404, 'no such viewer\n')

        def do_PATCH(self):  # trickle ICE is not supported: the offer must carry its candidates
            self._reply(405, 'trickle ICE not supported: send a complete offer\n')

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--listen', required=True, help='HOST:PORT for the WHEP HTTP server')
    ap.add_argument('--width', type=int, required=True)
    ap.add_argument('--height', type=int, required=True)
    ap.add_argument('--fps', type=int, required=True, help='nominal frame rate (caps, key-int-max=2*fps)')
    ap.add_argument('--bitrate', type=int, required=True, help='x264enc bitrate in kbit/s')
    ap.add_argument('--convert-threads', type=int, default=2, help='videoconvert n-threads (default 2)')
    args = ap.parse_args()
    global LOCAL_IP
    host, _, port = args.listen.rpartition(':')
    LOCAL_IP = host
    if not host or not port.isdigit() or args.width <= 0 or args.height <= 0 or args.fps <= 0 or args.bitrate <= 0:
        ap.error('bad arguments')
    if args.width % 2 or args.height % 2:
        ap.error('width and height must be even (I420)')
    check_elements()

    peer = Peer(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, peer.shutdown, signal.Signals(sig).name)
    # Prove the whole pipeline can be built and set PLAYING before announcing readiness (a throw-away one: the
    # real one is built per viewer, when the offer names the payload type).
    probe = Gst.parse_launch('appsrc is-live=true ! videoconvert ! x264enc ! rtph264pay ! '
                             'application/x-rtp,media=video,encoding-name=H264,payload=96 ! webrtcbin')
    if probe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        log('ERROR: the test pipeline does not reach PLAYING')
        sys.exit(1)
    probe.set_state(Gst.State.NULL)
    del probe

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    try:
        peer.httpd = ThreadingHTTPServer((host, int(port)), make_handler(peer))
    except OSError as e:
        log(f'ERROR: cannot listen on {args.listen}: {e}')
        sys.exit(1)
    threading.Thread(target=peer.httpd.serve_forever, kwargs={'poll_interval': 0.1}, name='http',
                     daemon=True).start()
    threading.Thread(target=peer.read_frames, name='stdin', daemon=True).start()
    log(f'{args.width}x{args.height}@{args.fps} {args.bitrate} kbit/s, GStreamer {Gst.version_string()}')
    print(f'{PROG}: ready http://{host}:{port}/whep', flush=True)
    peer.loop.run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)   # threads blocked in stdin read()/HTTP: nothing left to clean up; pipelines are already NULL


if __name__ == '__main__':
    main()
