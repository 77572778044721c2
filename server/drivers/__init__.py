"""Live inputs that drive a session's pose, one module per job.

pose       PoseBank / PoseState: latest-wins targets, clamping, vectorised smoothing
idle       IdleBank: blinks, breathing, sway, saccades for all slots, faded by input
websocket  drive messages (JSON and binary) and DriveSession for /v1/sessions/{id}/drive
audio      AudioDriver for /v1/sessions/{id}/audio: 48 kHz ring buffer + lip-sync
lipsync    LipSync: loudness and vowel colour -> visemes and jawOpen per frame
udp        UdpReceiver: one thread per UDP port, source filter, counted failures
vmc        VmcReceiver: VMC protocol (OSC) from VSeeFace, Waidayo, iFacialMocap, ...
livelink   LiveLinkReceiver: Live Link Face version-6 packets
presence   PresenceMonitor: operator_required standby policy and driver history
"""
