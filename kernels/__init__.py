"""Batched kernels, one module per stage, each with a CPU and a CUDA launcher.

Stages: `deform` -> `damage` -> `raster` -> `shade` -> `composite`. Every launcher
processes the whole batch of sessions in one call ("range mode", as in nvdiffrast):
sessions with different avatars and output sizes share launches through per-session
offsets.

Batch layout shared by all stages (host numpy arrays for the CPU launchers, device
arrays for the CUDA launchers, same shapes and dtypes):

Pools (render/pool.py: each avatar has its own regions; only a new avatar is uploaded)
    base_pos [Vp,3] f32, base_nrm [Vp,3] f32, uv [Vp,2] f32 (each avatar's vertex run is
    followed by one pad row, so morph_offsets[v + 1] of its last vertex is its own)
    morph_offsets [Vp] i32 (absolute into the morph arrays), morph_target [NNZ] i32
    (target index local to its avatar), morph_dpos [NNZ,3] f32, morph_dnrm [NNZ,3] f32
    skin_slot [Vp,4] i32 (palette slot, < P), skin_weight [Vp,4] f32
    tris [Tp,3] i32 (vertex indices local to the avatar), tri_mat [Tp] i32 (into the
    material pool: mat_base_color [Mt,4] f32 linear, mat_texture [Mt] i32 (-1 none),
    mat_uv_transform [Mt,2,3] f32, mat_alpha_mode [Mt] i8, mat_alpha_cutoff [Mt] f32,
    mat_double_sided [Mt] bool/u8, mat_shading [Mt] i8, mat_shade_color [Mt,3] f32,
    mat_toony [Mt] f32, mat_shift [Mt] f32)
    textures: tex_pixels [sum H*W*4] u8 sRGB RGBA, tex_offset [Nt] i64, tex_size [Nt,2] i32 (w,h)

Per-session rows (persistent arrays; row s describes session s of this tick)
    s_vbase, s_vcount, s_tbase, s_tcount  i32  the avatar's range in the pools
    s_obase  i32  start of this session's slice in the deformed buffers
                  (clip [*,4] f32 clip-space positions, wnrm [*,3] f32 world normals)
    s_weights [N,Mmax] f32  morph target weights
    s_palette [N,P,3,4] f32 world-space skinning matrices (rest pose = identity)
    s_viewproj [N,4,4] f32  world -> clip (OpenGL convention, row-vector-free: clip = M @ [x,y,z,1])
    s_light [N,4] f32       world direction towards the key light (xyz) and ambient (w)
    s_lw, s_lh i32, s_lbase i64   the avatar layer: its size and its offset (in pixels)
                  into the layer buffers vis_opaque/vis_blend [*] u64 and rgba [*,4] u8
    s_fw, s_fh i32, s_fbase i64   the output frame: NV12 at s_fbase in the frame buffer
                  (Y plane fw*fh bytes, then interleaved UV fw*fh/2 bytes)
    s_bgbase i64  the background, already NV12, same layout, in the background pool
    s_lx, s_ly i32  top-left of the avatar layer in the frame
    s_rect [N,4] i32  (x0,y0,x1,y1) even-aligned region of the frame to recomposite
                  (the host's choice; `damage` narrows it to what moved)
    s_dirty [N,4] i32 (x0,y0,x1,y1) of the layer that raster (plus a margin) and shade
                  redo, from `damage`; raster/shade launchers default to whole layers
    s_hbase i64, s_full u8  the slot's vertex history rows (hist [H,8] f32, kept across
                  ticks) and whether this frame must be redrawn whole (kernels/damage.py)
    s_ov_start, s_ov_count [N] i32  the session's overlays in the overlay table, z ascending

Overlay table (scene layers: product cards, captions, the AI-content label)
    ov_x, ov_y, ov_w, ov_h [K] i32  placement in the frame (may overhang it)
    ov_base [K] i64  first pixel row in ov_pixels [P,4] u8 (premultiplied sRGB RGBA)
    ov_opacity [K] f32, ov_z [K] i32  z < 0 behind the avatar, z >= 0 in front
    An empty table is passed as one-row dummy arrays (numba needs typed arrays).

Conventions
    Layer pixel (x, y) has its centre at (x + 0.5, y + 0.5); y grows downwards.
    Visibility word: (float32 bits of depth in [0,1]) << 32 | (local triangle id + 1);
    0xFFFFFFFFFFFFFFFF means empty. Smaller word = nearer surface.
    When no material in the pools is MASK or BLEND, vis_blend may be the very array
    vis_opaque is: raster then never writes a blend word, and shade reads equal words at
    a pixel as "no blend fragment" (a triangle is either opaque or not, so the words of a
    real blend layer never equal the opaque ones). This halves the layer's memory traffic.
    The layer RGBA is premultiplied, sRGB-encoded (what a display shows).
    NV12 is BT.709 limited range.
"""
