"""Vectorised rendering of frontal and lateral chest-radiograph phantoms.

The renderer builds a *density* map on a normalised coordinate grid
(``x, y`` in [-1, 1], ``y`` pointing down, patient's right on the image left)
by adding soft-tissue, air, bone and metal layers, then blurs, applies the
exposure and noise and quantises to ``uint8``.  Every structure is an implicit
shape evaluated on the whole grid, so the cost is a few dozen array
operations per image and no per-pixel Python loops.

Lesions are exaggerated relative to true anatomy (a 10 mm nodule is drawn
several pixels wide at 128 px) because a linear probe on an image encoder must
be able to see them at this resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .catalogue import CM_PER_UNIT
from .patients import DEFAULT_ANATOMY, DEFAULT_NUISANCE

_SEVERITY_SCALE = {"mild": 1.22, "moderate": 1.34, "severe": 1.47}
_ECM_SCALE = {"mild": 1.45, "moderate": 1.75}
_EDEMA_ALPHA = {"mild": 0.34, "moderate": 0.52, "severe": 0.75}


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    y, x = np.meshgrid(c, c, indexing="ij")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _ellipse_r(x, y, cx, cy, a, b, angle_deg=0.0):
    """Normalised elliptic radius (1 on the boundary) of a rotated ellipse."""
    dx, dy = x - cx, y - cy
    if angle_deg:
        t = np.deg2rad(angle_deg)
        c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
        dx, dy = dx * c + dy * s, dy * c - dx * s
    return np.sqrt((dx * np.float32(1 / a)) ** 2 + (dy * np.float32(1 / b)) ** 2)


def _soft(r, edge):
    """0..1 inside-ness from an elliptic radius, with a linear rim of width edge."""
    return np.clip((1.0 - r) / edge, 0.0, 1.0)


def _segment_distance(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _bezier(points, n=120):
    """Sample a Bezier curve through control points (de Casteljau)."""
    p = np.asarray(points, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    pts = np.broadcast_to(p, (n,) + p.shape).copy()
    while pts.shape[1] > 1:
        pts = pts[:, :-1] * (1 - t) + pts[:, 1:] * t
    return pts[:, 0]


def _path(points):
    """Piecewise smooth path: a Bezier for each consecutive triple of points."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) <= 3:
        return _bezier(p)
    mids = (p[1:-1][:-1] + p[1:-1][1:]) / 2
    segs, start = [], p[0]
    for i in range(1, len(p) - 1):
        end = mids[i - 1] if i < len(p) - 2 else p[-1]
        segs.append(_bezier([start, p[i], end], 60))
        start = end
    return np.concatenate(segs)


def _stroke(size, curve, width):
    """Rasterise a polyline of normalised points as a 0/1 stroke of given width."""
    c = np.asarray(curve, dtype=np.float64)
    seg = np.diff(c, axis=0)
    length = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(length)])
    px = 2.0 / size
    s = np.arange(0.0, cum[-1] + 1e-9, 0.3 * px)
    pts = np.stack([np.interp(s, cum, c[:, 0]), np.interp(s, cum, c[:, 1])], axis=1)
    tangent = np.gradient(pts, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    n_off = max(1, int(np.ceil(width / (0.5 * px))))
    offsets = np.linspace(-width / 2, width / 2, n_off) if n_off > 1 else np.zeros(1)
    all_pts = (pts[None] + offsets[:, None, None] * normal[None]).reshape(-1, 2)
    col = np.floor((all_pts[:, 0] + 1) / px).astype(int)
    row = np.floor((all_pts[:, 1] + 1) / px).astype(int)
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    canvas = np.zeros((size, size), dtype=bool)
    canvas[row[ok], col[ok]] = True
    return canvas


def _smooth_noise(rng, size, sigma_units):
    """Zero-mean, unit-variance correlated noise; sigma in normalised units."""
    n = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma_units * size / 2, mode="reflect")
    return n / (n.std() + 1e-9)


def _present(findings, name):
    return bool(findings.get(name, {}).get("present"))


def _geom(finding, key, default=0.5):
    return float(finding.get("geometry", {}).get(key, default))


def _side_sign(side):
    # Patient's right is displayed on the image left (negative x).
    return -1.0 if side == "right" else 1.0


def _sides(laterality):
    if laterality in ("bilateral", "bibasilar"):
        return ("right", "left")
    return (laterality,)


def _finish(density, nuisance, rng, size, noise_scale=1.0):
    """Blur, tone-map, expose, add quantum noise and quantise to uint8."""
    d = ndimage.gaussian_filter(density, 0.55 * size / 128 + 0.25)
    # Film-like saturating response keeps metal and bone from clipping flat.
    v = 1.0 - np.exp(-1.9 * np.clip(d, 0.0, None))
    v = v / (1.0 - np.exp(-1.9 * 1.15))
    v = np.clip(v, 0.0, 1.0) ** float(nuisance["exposure_gamma"])
    v = (v - 0.45) * float(nuisance["exposure_contrast"]) + 0.45 + float(nuisance["exposure_brightness"])
    mottle = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 0.6)
    v = v + mottle * (0.036 * noise_scale)
    img = np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if nuisance.get("inverted"):
        img = 255 - img
    return img


def _inputs(state):
    anatomy = {**DEFAULT_ANATOMY, **(state.get("anatomy") or {})}
    nuisance = {**DEFAULT_NUISANCE, **(state.get("nuisance") or {})}
    return anatomy, nuisance, state.get("findings") or {}, state.get("sex", "M")


@dataclass
class _Thorax:
    """Frontal geometry shared by the drawing steps (normalised units)."""

    x: np.ndarray
    y: np.ndarray
    size: int
    ap: bool
    supine: bool
    mx: float                 # midline shift caused by rotation
    cw: float                 # half-width of the rib cage
    apex: float
    cage_cy: float
    cage_r: np.ndarray        # elliptic radius of the rib cage (1 on its wall)
    right_half: np.ndarray    # patient's right, i.e. the image left
    side_sign: np.ndarray     # -1 on the patient's right, +1 on the left
    u: np.ndarray             # 0 at the midline, 1 at the cage wall
    dome_r: float
    dome_l: float
    lift: dict
    y_dia: np.ndarray         # diaphragm height under each column
    hx: float
    hy: float
    hw: float
    hh: float
    heart: np.ndarray
    mediastinum: np.ndarray
    lung: np.ndarray
    hil_x: np.ndarray
    hil_y: float
    heart_left_edge: float

    @property
    def px(self) -> float:
        return 2.0 / self.size

    @property
    def cardiomed(self) -> np.ndarray:
        return self.heart | self.mediastinum

    def clear_of_heart(self, cx, sign, zone, margin):
        """Push left mid/lower lesions lateral to the (possibly enlarged) heart."""
        if sign < 0 or zone == "upper":
            return cx
        return max(cx, min(self.heart_left_edge + margin, self.mx + 0.85 * self.cw - margin))


class _Layers:
    """What the drawing steps contribute, accumulated on the grid."""

    def __init__(self, x):
        self.opacity_keep = np.ones_like(x)   # product of (1 - alpha) over lung opacities
        self.extra = np.zeros_like(x)         # density added on top of everything else
        self.no_markings = np.zeros_like(x)   # where vessels vanish (pneumothorax)
        self.pleural_line = np.zeros_like(x)
        self.edema_level = 0.0
        self.masks: dict[str, np.ndarray] = {}

    def add_opacity(self, alpha):
        self.opacity_keep *= 1.0 - np.clip(alpha, 0.0, 1.0)


def _thorax(anat, nz, f, size) -> _Thorax:
    x, y = _grid(size)
    ap = nz["view_position"] == "AP"
    supine = nz["patient_orientation"] == "Recumbent"
    mag = 1.07 if ap else 1.0               # AP: heart further from the detector
    mx = 0.006 * float(nz["rotation_deg"])  # rotation shifts the midline structures
    cw, apex, cage_cy = anat["cage_width"], anat["apex_y"], 0.32
    cage_r = _ellipse_r(x, y, mx * 0.3, cage_cy, cw, cage_cy - apex)
    right_half = x < mx
    side_sign = np.where(right_half, np.float32(-1.0), np.float32(1.0))
    u = np.abs(x - mx) / cw
    # AP films are usually taken with a poorer inspiration, supine ones even more so.
    dome_r = anat["dome_right"] - (0.04 if ap else 0.0) - (0.03 if supine else 0.0)
    dome_l = dome_r + anat["dome_left_drop"]
    lift = {"right": 0.0, "left": 0.0}
    if _present(f, "atelectasis"):
        for s in _sides(f["atelectasis"]["laterality"]):
            lift[s] = 0.035  # volume loss elevates the hemidiaphragm
    dome = np.where(right_half, np.float32(dome_r - lift["right"]), np.float32(dome_l - lift["left"]))
    y_dia = dome + 0.85 * np.clip(u - 0.45, 0, None) ** 2 + 0.6 * np.clip(0.45 - u, 0, None) ** 2

    card = _SEVERITY_SCALE.get(f.get("cardiomegaly", {}).get("severity"), 1.0) if _present(f, "cardiomegaly") else 1.0
    s_h = card * mag
    hw = anat["heart_width"] * s_h
    hh = anat["heart_height"] * (1 + (s_h - 1) * 0.55)
    hx = mx + anat["heart_cx"] + (s_h - 1) * 0.15
    hy = (dome_r + dome_l) / 2 + 0.04 - hh * 0.55
    # The heart rests on the diaphragm, which flattens its lower border.
    heart = (_ellipse_r(x, y, hx, hy, hw, hh, anat["heart_angle_deg"]) < 1.0) & (y < dome_l + 0.12)
    t_h = np.deg2rad(anat["heart_angle_deg"])
    heart_left_edge = hx + float(np.hypot(hw * np.cos(t_h), hh * np.sin(t_h)))

    ecm = _ECM_SCALE.get(f.get("enlarged_cardiomediastinum", {}).get("severity"), 1.0) \
        if _present(f, "enlarged_cardiomediastinum") else 1.0
    mw = anat["mediastinum_width"] * mag * ecm * (0.85 + 0.45 * np.clip((y - apex) / 0.45, 0, 1))
    mediastinum = (np.abs(x - mx - 0.015) < mw) & (y < hy + 0.05)
    knob_r = 0.055 * (1.0 + 0.35 * (ecm - 1))  # aortic knob
    mediastinum |= np.hypot(x - (mx + 0.015 + mw * 0.85 + 0.02), y - (anat["carina_y"] + 0.02)) < knob_r
    lung = (cage_r < 1.0) & (y < y_dia) & ~(heart | mediastinum) & (np.abs(x - mx) > 0.04)
    # Hilar centres drive both vascular markings and perihilar edema.
    hil_x = np.where(right_half, np.float32(mx - 0.2), np.float32(mx + 0.22))
    return _Thorax(x, y, size, ap, supine, mx, cw, apex, cage_cy, cage_r, right_half, side_sign, u, dome_r,
                   dome_l, lift, y_dia, hx, hy, hw, hh, heart, mediastinum, lung, hil_x,
                   anat["carina_y"] + 0.2, heart_left_edge)


def _draw_pleura(t: _Thorax, f: dict, layers: _Layers) -> None:
    """Pleural effusion (meniscus, or a veil when supine) and pneumothorax."""
    x, y, lung = t.x, t.y, t.lung
    if _present(f, "pleural_effusion"):
        eff = f["pleural_effusion"]
        h, m = {"small": (0.0, 0.17), "moderate": (0.14, 0.22), "large": (0.38, 0.26)}[eff["size"]]
        alpha = np.zeros_like(x)
        for s in _sides(eff["laterality"]):
            on_side = t.side_sign == _side_sign(s)
            level = t.y_dia - (h + m * np.clip(t.u, 0, 1) ** 2.5) * (0.65 if t.supine else 1.0)
            a = np.clip((y - level) / 0.045, 0, 1) * on_side
            if t.supine:  # fluid layering posteriorly veils the whole hemithorax
                a = np.maximum(a, on_side * (0.25 + 0.3 * (h > 0)) * np.clip((y - t.apex) / 1.1, 0, 1))
            alpha = np.maximum(alpha, a)
        layers.add_opacity(alpha * 0.97)
        layers.masks["pleural_effusion"] = lung & (alpha > 0.5)
    if _present(f, "pneumothorax"):
        ptx = f["pneumothorax"]
        on_side = t.side_sign == _side_sign(ptx["laterality"])
        depth, y_lim = (0.16, 0.05) if ptx["size"] == "small" else (0.36, 0.38)
        d_eff = depth * np.clip((y_lim - y) / 0.3, 0, 1)
        region = lung & on_side & (t.cage_r > 1.0 - d_eff) & (d_eff > 0.01)
        layers.no_markings = np.maximum(layers.no_markings, region)
        line = lung & on_side & (np.abs(t.cage_r - (1.0 - d_eff)) < 0.9 * t.px / t.cw) & (d_eff > 0.03)
        layers.pleural_line += line * 0.16
        if ptx["size"] == "large":  # the collapsed lung is denser
            layers.add_opacity(0.18 * (lung & on_side & ~region))
        layers.masks["pneumothorax"] = region


def _draw_parenchyma(t: _Thorax, f: dict, rng, layers: _Layers) -> None:
    """Consolidation, edema, atelectasis, nodule, mass and pleural thickening."""
    x, y, lung, cw, mx, apex = t.x, t.y, t.lung, t.cw, t.mx, t.apex
    # Patchy texture for airspace disease; only drawn when something needs it.
    needs_texture = any(_present(f, n) for n in ("consolidation", "edema", "pleural_thickening"))
    texture = _smooth_noise(rng, t.size, 0.045) if needs_texture else None
    if _present(f, "consolidation"):
        c = f["consolidation"]
        s = _side_sign(c["laterality"])
        cy = {"upper": apex + 0.32, "middle": -0.02, "lower": t.dome_r + 0.02 - 0.2}[c["zone"]]
        cx = t.clear_of_heart(mx + s * cw * (0.45 + 0.25 * _geom(c, "u")), s, c["zone"], 0.12)
        a_ax, b_ax = (0.17, 0.14) if c["extent"] == "small" else (0.28, 0.23)
        blob = _soft(_ellipse_r(x, y, cx, cy + 0.1 * (_geom(c, "v") - 0.5), a_ax, b_ax), 0.45)
        alpha = np.clip(blob * (1.15 + 0.45 * texture), 0, 0.95) * lung
        layers.masks["consolidation"] = alpha > 0.3
        layers.add_opacity(alpha)
    if _present(f, "edema"):
        layers.edema_level = _EDEMA_ALPHA[f["edema"]["severity"]]
        r2 = ((x - t.hil_x) / 0.32) ** 2 + ((y - t.hil_y) / 0.42) ** 2
        alpha = layers.edema_level * np.exp(-r2) * (0.85 + 0.15 * texture) * lung
        if f["edema"]["severity"] == "severe":  # alveolar edema adds patchy airspace filling
            alpha = np.maximum(alpha, 0.5 * np.clip(texture, 0, 1) * np.exp(-r2 / 2) * lung)
        layers.masks["edema"] = alpha > 0.12
        layers.add_opacity(alpha)
    if _present(f, "atelectasis"):
        at = f["atelectasis"]
        band = np.zeros_like(x)
        for s in _sides(at["laterality"]):
            sg = _side_sign(s)
            base = (t.dome_r if s == "right" else t.dome_l) - t.lift[s]
            cx = t.clear_of_heart(mx + sg * cw * (0.55 + 0.15 * _geom(at, "u")), sg, "lower", 0.15)
            cy = base - 0.09 - 0.06 * _geom(at, "v")
            tilt = 0.12 * sg
            d = _segment_distance(x, y, cx - 0.2, cy - 0.2 * tilt, cx + 0.2, cy + 0.2 * tilt)
            band = np.maximum(band, np.clip(1.0 - d / 0.026, 0, 1) ** 0.5)
            if _geom(at, "w") > 0.5:  # a second, thinner plate
                d2 = _segment_distance(x, y, cx - 0.13, cy + 0.07, cx + 0.13, cy + 0.07 + 0.1 * tilt)
                band = np.maximum(band, 0.8 * np.clip(1.0 - d2 / 0.018, 0, 1))
        band *= lung
        layers.masks["atelectasis"] = band > 0.3
        layers.add_opacity(band * 0.95)
    for name, base_r in (("lung_nodule", 0.042), ("lung_mass", 0.075)):
        if not _present(f, name):
            continue
        les = f[name]
        s = _side_sign(les["laterality"])
        radius = base_r + les["size_mm"] * (0.0018 if name == "lung_nodule" else 0.0012)
        lo = 0.5 if (s > 0 and les["zone"] != "upper") else 0.32
        cx = t.clear_of_heart(mx + s * cw * (lo + 0.3 * _geom(les, "u")), s, les["zone"], radius)
        cy = {"upper": apex + 0.33, "middle": -0.04, "lower": t.dome_r - 0.16}[les["zone"]] \
            + 0.08 * (_geom(les, "v") - 0.5)
        theta = np.arctan2(y - cy, x - cx)
        wobble = 1.0 if name == "lung_nodule" else (
            1.0 + 0.12 * np.sin(3 * theta + 6.3 * _geom(les, "w")) + 0.05 * np.sin(5 * theta))  # lobulated
        rr = np.hypot(x - cx, y - cy) / (radius * wobble)
        alpha = _soft(rr, 0.3)
        layers.masks[name] = rr < 1.0
        layers.add_opacity(alpha)
        layers.extra += (0.12 if name == "lung_nodule" else 0.07) * alpha
    if _present(f, "pleural_thickening"):
        pt = f["pleural_thickening"]
        band = np.zeros_like(x)
        for s in _sides(pt["laterality"]):
            on_side = t.side_sign == _side_sign(s)
            thick = 0.05 + 0.02 * texture
            if pt["location"] == "apical":
                zone = y < apex + 0.3
            else:
                zone = (y > -0.4) & (y < 0.35)
                thick = thick * 0.9
            band = np.maximum(band, on_side & zone & (t.cage_r > 1.0 - thick / cw))
        band = band * lung
        layers.masks["pleural_thickening"] = band > 0.5
        layers.add_opacity(band * 0.85)


def _draw_bones(t: _Thorax, f: dict, nz: dict, anat: dict, body, layers: _Layers):
    """Ribs (with a planted fracture), clavicles, scapulae, humeri and spine."""
    x, y, cw, mx, apex, lung = t.x, t.y, t.cw, t.mx, t.apex, t.lung
    cardiomed = t.cardiomed
    spine_x = mx * 0.7 + _scoliosis_offset(y, nz)
    ur = np.clip((np.abs(x - spine_x) - 0.05) / cw, 0, 1.2)
    # Scoliosis crowds the ribs on the concave side and fans them on the convex side.
    convex = {"dextro": -1.0, "levo": 1.0}.get(nz.get("scoliosis"), 0.0)
    scol_amp = float(nz.get("scoliosis_amplitude", 0.0) or 0.0)
    spacing_of = {sg: anat["rib_spacing"] * (1 + 1.2 * scol_amp * convex * sg) for sg in (-1.0, 1.0)}
    spacing = np.where(t.right_half, np.float32(spacing_of[-1.0]), np.float32(spacing_of[1.0]))
    half = 0.023

    def rib_curve(uu):  # posterior ribs arch up from the spine, then fall laterally
        return -0.05 * uu + 0.28 * uu ** 2 + 0.8 * np.clip(uu - 0.75, 0, None) ** 2

    v_rib = y - rib_curve(ur)
    v0 = apex + 0.06 + anat["rib_phase"]
    fracture = None
    if _present(f, "rib_fracture"):
        fr = f["rib_fracture"]
        sg = _side_sign(fr["laterality"])
        target = int(fr["rib"]) - 1
        u_f = 0.68 + 0.14 * _geom(fr, "u")  # fractures are mostly lateral/posterolateral
        on_rib = (t.side_sign == sg) & (np.abs(v_rib - (v0 + target * spacing)) < spacing * 0.5)
        v_rib = v_rib - 0.06 * (on_rib & (ur > u_f))  # displaced lateral fragment
        fracture = (sg, target, u_f, on_rib)
    phase = (v_rib - v0) / spacing
    idx = np.floor(phase + 0.5)
    frac = np.abs(phase - idx) * spacing
    rib = np.clip(1.6 * (1.0 - frac / half), 0, 1) * (idx >= 0) * (idx <= 9)
    rib *= (t.cage_r < 1.03) & (np.abs(x - spine_x) > 0.05)
    if fracture is not None:
        sg, target, u_f, on_rib = fracture
        rib = rib * ~(on_rib & (idx == target) & (np.abs(ur - u_f) < 0.065))  # the gap
        fy = v0 + target * spacing_of[sg] + float(rib_curve(np.float32(u_f)))
        fx = mx * 0.7 + sg * (0.05 + u_f * cw)
        site = np.hypot(x - fx, (y - fy) * 1.4)
        # An extrapleural haematoma, a lens of blood along the chest wall at the
        # fracture, is what makes a rib fracture conspicuous at low resolution.
        wall_x = mx * 0.3 + sg * cw * np.sqrt(max(1 - ((fy - t.cage_cy) / (t.cage_cy - apex)) ** 2, 0.05))
        lens = _soft(_ellipse_r(x, y, wall_x, fy, 0.1, 0.2), 0.4) * lung
        layers.add_opacity(np.maximum(lens, 0.5 * _soft(site / 0.08, 0.6) * lung))
        layers.extra += 0.05 * lens
        layers.masks["rib_fracture"] = (site < 0.08) | (lens > 0.3)
    # Anterior ribs: fainter, sloping down towards the midline.
    ua = np.clip(t.u, 0, 1.2)
    pa = (y - 0.32 * (1 - ua) - (apex + 0.02)) / 0.155
    fa = np.abs(pa - np.floor(pa + 0.5)) * 0.155
    ant = np.clip(1.4 * (1.0 - fa / 0.024), 0, 1) * (pa > -0.5) * (pa < 6.5) * (ua > 0.3) * (t.cage_r < 1.02)
    bone = rib * (0.11 - 0.07 * cardiomed) * (1.15 - 0.3 * np.clip(ur, 0, 1)) + ant * 0.035

    # Clavicles project higher on AP films (lordotic positioning).
    clav_y = apex + (0.03 if t.ap else 0.13)
    tcl = (np.abs(x + 0.3 * mx) - 0.07) / 0.58
    ycl = clav_y - 0.1 * tcl + 0.03 * np.sin(np.pi * np.clip(tcl, 0, 1))
    bone += 0.15 * ((np.abs(y - ycl) < 0.032 - 0.01 * np.clip(tcl, 0, 1)) & (tcl > 0) & (tcl < 1.05))
    # Scapulae overlap the lungs on AP films and are rotated out on PA films.
    scx, sca = (0.68, 0.04) if t.ap else (0.86, 0.03)
    bw = anat["body_width"]
    for sg in (-1, 1):
        r = _ellipse_r(x, y, sg * scx, apex + 0.42, 0.13, 0.3, -sg * 12)
        bone += sca * ((r < 1.0) & (r > 0.8)) + 0.5 * sca * (r < 0.8)
        bone += 0.16 * body * (np.hypot(x - sg * (bw + 0.02), y - (apex + 0.02)) < 0.13)  # humeral heads
    # Spine with vertebral bodies, disc spaces and pedicles.
    spine = np.abs(x - spine_x) < 0.066
    discs = 0.8 + 0.2 * (np.cos(2 * np.pi * (y - apex) / 0.105) > -0.55)
    pedicles = (np.abs(np.abs(x - spine_x) - 0.045) < 0.014) & (np.cos(2 * np.pi * (y - apex) / 0.105) > 0.3)
    bone += (spine * discs + 0.8 * pedicles) * np.where(cardiomed | (y > t.y_dia), np.float32(0.1), np.float32(0.08))
    return bone


def _soft_tissue(t: _Thorax, anat: dict, sex: str, habitus: str, body):
    """Body wall, mediastinum, upper abdomen with gastric bubble, breasts."""
    x, y = t.x, t.y
    bw = anat["body_width"]
    # X-ray path length through soft tissue is longest in the middle of the chest.
    tissue = anat["soft_tissue"] * body * (0.5 + 0.5 * np.sqrt(np.clip(1 - (x / (bw + 0.05)) ** 2, 0, 1)))
    abdomen = np.clip((y - t.y_dia) / 0.05, 0, 1) * (t.cage_r < 1.08)
    thorax_top = np.clip((y - t.apex + 0.1) / 0.2, 0, 1)
    # Mediastinum, heart and the solid upper abdomen are all thick soft tissue.
    tissue += 0.22 * np.maximum(abdomen, t.cardiomed * thorax_top) + 0.03 * t.heart
    bubble = _ellipse_r(x, y, t.mx + 0.33, t.dome_l + 0.13, 0.11, 0.06) < 1.0
    tissue -= 0.2 * (bubble & (y > t.y_dia + 0.02))
    if sex == "F":
        for sg in (-1, 1):
            br = _ellipse_r(x, y, t.mx + sg * 0.46, t.dome_r - 0.02, 0.34, 0.26)
            tissue += (0.09 if habitus == "large" else 0.07) * _soft(br, 0.25) * (y > t.dome_r - 0.2)
    return tissue


def render_frontal(state: dict, rng: np.random.Generator, size: int):
    """Render a frontal (PA or AP) radiograph and masks of what is planted.

    Parameters
    ----------
    state : dict
        Image state (see :mod:`saerad.synthcxr.patients`); missing keys fall
        back to a normal adult PA study.
    rng : numpy.random.Generator
        Source of per-image texture and noise.
    size : int
        Side of the square output in pixels.

    Returns
    -------
    image : numpy.ndarray
        ``(size, size)`` ``uint8`` grey-scale image.
    masks : dict of str to numpy.ndarray
        One boolean ``(size, size)`` mask per present finding or device.
    """
    anat, nz, f, sex = _inputs(state)
    habitus = nz["habitus"]
    t = _thorax(anat, nz, f, size)
    x, y, mx = t.x, t.y, t.mx
    layers = _Layers(x)
    _draw_pleura(t, f, layers)
    _draw_parenchyma(t, f, rng, layers)
    body = _body_outline(x, y, anat["body_width"], t.apex)
    bone = _draw_bones(t, f, nz, anat, body, layers)
    tissue = _soft_tissue(t, anat, sex, habitus, body)

    trachea_x = mx * 0.6
    carina = anat["carina_y"]
    airway = (np.abs(x - trachea_x) < 0.034) & (y < carina)
    for dx, dy in ((-0.15, 0.2), (0.2, 0.15)):  # main bronchi, the right steeper
        airway |= _segment_distance(x, y, trachea_x, carina, trachea_x + dx, carina + dy) < 0.024
    edema = layers.edema_level
    hila = 0.1 * (1 + 0.6 * edema) * np.exp(-(((x - t.hil_x) / 0.07) ** 2 + ((y - t.hil_y) / 0.09) ** 2))
    marks = _lung_markings(x, y, t.hil_x, t.hil_y, rng) * (1 + 0.8 * edema) * (1 - layers.no_markings)

    # Air in the lungs lowers the density; opacities fill that air back in.
    air = {"thin": 0.27, "average": 0.26, "large": 0.25}.get(habitus, 0.26)
    lung_f = t.lung.astype(np.float32)
    keep = layers.opacity_keep
    lung_shading = 0.05 * np.clip(y / 0.6, 0, 1) ** 2 + 0.05 * np.clip((t.apex + 0.3 - y) / 0.3, 0, 1)
    density = tissue - air * lung_f * keep * (1.0 + 0.3 * layers.no_markings)
    density += lung_f * (marks * 0.12 * keep + lung_shading + hila) + layers.pleural_line
    density += bone * (0.6 + 0.4 * body) + layers.extra - 0.1 * airway

    masks = layers.masks
    metal = np.zeros_like(x)
    for name, (dev_density, dev_mask) in _draw_devices(f, anat, t, trachea_x).items():
        metal = np.maximum(metal, dev_density)
        # Thin lines get a one-pixel margin so the mask covers their blur.
        masks[name] = ndimage.binary_dilation(dev_mask, iterations=1)
    if nz.get("piercing"):
        # Nipple ring: large enough that its hole survives at 128 px, so it
        # reads as metal rather than as a nodule.
        sg = _side_sign(nz.get("piercing_side", "left"))
        ring = np.abs(np.hypot(x - (mx + sg * 0.43), y - (t.dome_r - 0.08)) - 0.038) < 0.55 * t.px
        metal = np.maximum(metal, ring * 0.7)
    density += metal

    if _present(f, "cardiomegaly"):
        masks["cardiomegaly"] = t.heart
    if _present(f, "enlarged_cardiomediastinum"):
        masks["enlarged_cardiomediastinum"] = t.mediastinum & (y < t.hy - 0.05) & (y > t.apex - 0.05)

    noise_scale = {"thin": 0.9, "average": 1.0, "large": 1.35}.get(habitus, 1.0) * (1.15 if t.ap else 1.0)
    image = _finish(density, nz, rng, size, noise_scale)
    return image, {k: np.ascontiguousarray(v, dtype=bool) for k, v in masks.items()}


def _body_outline(x, y, bw, apex):
    """Soft 0..1 body mask: neck, sloping shoulders and a barrel-shaped torso."""
    torso = bw * (1.0 - 0.22 * ((y - 0.2) / 1.2) ** 2)
    shoulder = 0.26 + (bw + 0.15 - 0.26) * np.clip((y + 1.05) / (apex + 1.05), 0, 1) ** 0.7
    half_width = np.minimum(torso, shoulder)
    return np.clip((half_width - np.abs(x)) / 0.04, 0, 1)


def _scoliosis_offset(y, nz):
    kind = nz.get("scoliosis", "none")
    if kind == "none":
        return np.zeros_like(y)
    amp = float(nz.get("scoliosis_amplitude", 0.06)) or 0.06
    bump = np.sin(np.pi * np.clip((y + 0.95) / 1.7, 0, 1))
    # Dextroscoliosis is convex to the patient's right, i.e. to the image left.
    return (-amp if kind == "dextro" else amp) * bump


def _lung_markings(x, y, hil_x, hil_y, rng):
    n_theta, n_r = 160, 28
    field = ndimage.gaussian_filter(rng.standard_normal((n_theta, n_r), dtype=np.float32), (0.9, 2.5), mode=("wrap", "nearest"))
    field /= field.std() + 1e-9
    dx, dy = x - hil_x, y - hil_y
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    # Nearest-neighbour lookup is enough: the image is blurred afterwards.
    ti = ((theta + np.pi) * (n_theta / (2 * np.pi))).astype(np.intp) % n_theta
    ri = np.minimum((r * ((n_r - 1) / 1.3)).astype(np.intp), n_r - 1)
    sampled = field[ti, ri]
    ridges = np.clip(1.0 - np.abs(sampled) / 0.35, 0, 1) ** 1.5
    return ridges * np.exp(-r / 0.6)


def _draw_devices(f, anat, t: _Thorax, trachea_x):
    """Metal density and boolean mask of every present device, by name."""
    x, y, size, mx, hx, hy, hw, hh, dome_l = t.x, t.y, t.size, t.mx, t.hx, t.hy, t.hw, t.hh, t.dome_l
    out = {}
    carina = anat["carina_y"]
    apex = anat["apex_y"]
    ra = (mx - 0.13, hy - 0.04)                       # right atrium
    rv = (hx + 0.45 * hw, hy + 0.55 * hh)             # right-ventricular apex
    if _present(f, "endotracheal_tube"):
        tip_y = carina - float(f["endotracheal_tube"]["tip_cm_above_carina"]) / CM_PER_UNIT
        tube = (np.abs(x - trachea_x) < 0.026) & (y < tip_y)
        stripe = (np.abs(x - trachea_x + 0.017) < 0.007) & (y < tip_y)
        out["endotracheal_tube"] = (np.maximum(tube * 0.42, stripe * 0.6), tube | stripe)
    if _present(f, "nasogastric_tube"):
        ng = f["nasogastric_tube"]
        pts = [(trachea_x + 0.05, -1.05), (mx + 0.04, carina), (mx + 0.06, dome_l - 0.06)]
        if ng["tip"] == "stomach":
            pts += [(mx + 0.12, dome_l + 0.12), (mx + 0.32, dome_l + 0.16)]
        else:
            pts = [(trachea_x + 0.05, -1.05), (mx + 0.04, carina + 0.1 + 0.25 * _geom(ng, "u"))]
        line = _stroke(size, _path(pts), 0.022)
        out["nasogastric_tube"] = (line * 0.38, line)
    if _present(f, "central_line"):
        cl = f["central_line"]
        sg = _side_sign(cl["side"])
        tip = {"svc": (mx - 0.07, carina + 0.08), "right_atrium": (mx - 0.1, hy - 0.02),
               "too_high": (mx + sg * 0.14 if sg > 0 else mx - 0.16, apex + 0.25)}[cl["tip"]]
        if cl["approach"] == "jugular":
            pts = [(mx + sg * 0.2, -1.05), (mx + sg * 0.16, apex + 0.18)]
        else:
            pts = [(sg * 0.62, apex + 0.2), (sg * 0.3, apex + 0.2), (mx + sg * 0.14, apex + 0.26)]
        if cl["tip"] != "too_high":
            pts += [(mx - 0.07 if sg < 0 else mx + 0.02, apex + 0.38), (mx - 0.07, carina - 0.05)]
        pts.append(tip)
        line = _stroke(size, _path(pts), 0.02)
        out["central_line"] = (line * 0.36, line)
    if _present(f, "pacemaker"):
        pm = f["pacemaker"]
        sg = _side_sign(pm["generator_side"])
        gx, gy = mx + sg * 0.5, apex + 0.32
        r = np.maximum(np.abs(x - gx) / 0.09, np.abs(y - gy) / 0.065)
        box = (((np.abs(x - gx) / 0.09) ** 4 + (np.abs(y - gy) / 0.065) ** 4) < 1.0)
        inner = r < 0.55
        leads = np.zeros_like(x, dtype=bool)
        route = [(gx - sg * 0.07, gy), (mx + sg * 0.2, apex + 0.25), (mx - 0.06, carina - 0.02), (mx - 0.1, hy - 0.14)]
        leads |= _stroke(size, _path(route + [ra, rv]), 0.024)
        if int(pm["leads"]) >= 2:
            leads |= _stroke(size, _path(route + [(mx - 0.16, hy - 0.1), (mx - 0.08, hy - 0.2)]), 0.022)
        out["pacemaker"] = (np.maximum(box * (0.8 - 0.15 * inner), leads * 0.55), box | leads)
    if _present(f, "sternotomy_wires"):
        n = int(f["sternotomy_wires"]["count"])
        y_top, y_bot = carina - 0.1, hy + 0.08
        dy = (y_bot - y_top) / max(n - 1, 1)
        k = np.clip(np.round((y - y_top) / dy), 0, n - 1)
        yk = y_top + k * dy
        r = _ellipse_r(x, y, mx + 0.015, yk, 0.032, 0.019)
        loops = (np.abs(r - 1.0) * 0.019 < 0.45 * 2.0 / size) | (
            (np.abs(x - mx - 0.015) < 0.005) & (np.abs(y - yk) < 0.03))
        out["sternotomy_wires"] = (loops * 0.7, loops)
    return out


def render_lateral(state: dict, rng: np.random.Generator, size: int) -> np.ndarray:
    """Render a simple lateral view (patient facing the image left).

    Parameters
    ----------
    state, rng, size
        As for :func:`render_frontal`.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` ``uint8`` image.  Lateral views carry no masks.
    """
    anat, nz, f, sex = _inputs(state)
    x, y = _grid(size)
    habitus = nz["habitus"]
    depth = {"thin": 0.72, "average": 0.8, "large": 0.9}.get(habitus, 0.8)
    body = np.maximum(_soft(_ellipse_r(x, y, 0.02, 0.25, depth, 1.4), 0.05),
                      _soft(_ellipse_r(x, y, 0.12, -1.05, 0.4, 0.45), 0.1))
    tissue = anat["soft_tissue"] * body * (0.6 + 0.4 * np.sqrt(np.clip(1 - (x / depth) ** 2, 0, 1))) * 1.15
    dome = anat["dome_right"] + 0.02
    # Domes slope down posteriorly into the deep posterior costophrenic sulcus.
    y_dia = dome - 0.08 + 0.12 * x + 0.5 * np.clip(x - 0.25, 0, None) ** 2
    spine_x = 0.6 - 0.06 * np.sin(np.pi * np.clip((y + 1) / 2, 0, 1))
    lung = (_ellipse_r(x, y, 0.0, 0.02, 0.68, 0.9) < 1.0) & (y < y_dia) & (x < spine_x - 0.1)
    card = _SEVERITY_SCALE.get(f.get("cardiomegaly", {}).get("severity"), 1.0) if _present(f, "cardiomegaly") else 1.0
    heart = _soft(_ellipse_r(x, y, -0.26 - 0.05 * (card - 1), dome - 0.2, 0.3 * card,
                             0.26 * (1 + 0.5 * (card - 1)), -25), 0.08)
    keep = np.ones_like(x)
    texture = _smooth_noise(rng, size, 0.05)
    if _present(f, "pleural_effusion"):
        h = {"small": 0.06, "moderate": 0.16, "large": 0.34}[f["pleural_effusion"]["size"]]
        level = y_dia - h - 0.3 * np.clip(x - 0.0, 0, None)  # meniscus rising posteriorly
        keep *= 1 - np.clip((y - level) / 0.04, 0, 1) * 0.95
    if _present(f, "consolidation"):
        c = f["consolidation"]
        cy = {"upper": -0.45, "middle": -0.05, "lower": dome - 0.25}[c["zone"]]
        a = 0.17 if c["extent"] == "small" else 0.26
        blob = _soft(_ellipse_r(x, y, 0.25 * _geom(c, "u"), cy, a, a * 0.8), 0.45)
        keep *= 1 - np.clip(blob * (1.1 + 0.4 * texture), 0, 0.9)
    if _present(f, "edema"):
        keep *= 1 - _EDEMA_ALPHA[f["edema"]["severity"]] * 0.8 * np.exp(-((x - 0.05) ** 2 + (y + 0.05) ** 2) / 0.15)
    for name, base_r in (("lung_nodule", 0.036), ("lung_mass", 0.075)):
        if _present(f, name):
            les = f[name]
            cy = {"upper": -0.45, "middle": -0.05, "lower": dome - 0.22}[les["zone"]]
            rad = base_r + les["size_mm"] * (0.0018 if name == "lung_nodule" else 0.0012)
            keep *= 1 - _soft(np.hypot(x - (0.35 * _geom(les, "u") - 0.05), y - cy) / rad, 0.3)
    # Both lungs overlap here, and the heart sits between them, so it only
    # displaces about half of the air along each ray.
    air = 0.27 * lung * keep * (1 - 0.55 * heart)
    abdomen = np.clip((y - y_dia) / 0.05, 0, 1) * body
    density = tissue + 0.08 * abdomen - air + 0.04 * heart
    vert_phase = np.abs(((y + 1.0) / 0.115) % 1.0 - 0.5)
    vertebrae = (np.abs(x - spine_x) < 0.09) * (vert_phase < 0.4)
    posterior = (np.abs(x - spine_x - 0.17) < 0.05) * (0.5 + 0.5 * (vert_phase < 0.3))
    sternum = (np.abs(x - (-0.6 + 0.08 * (y + 0.6))) < 0.028) & (y > -0.72) & (y < 0.3)
    density += 0.17 * vertebrae + 0.07 * posterior + 0.12 * sternum
    trachea = (np.abs(x - (0.0 + 0.1 * (y + 1))) < 0.04) & (y < -0.2)
    density -= 0.1 * trachea
    density += 0.06 * np.exp(-(((x - 0.06) / 0.1) ** 2 + ((y + 0.12) / 0.12) ** 2))  # hila

    metal = np.zeros_like(x)
    if _present(f, "pacemaker"):
        box = (np.abs(x + 0.64) < 0.035) & (np.abs(y + 0.45) < 0.08)
        metal = np.maximum(metal, box * 0.8)
        metal = np.maximum(metal, _stroke(size, _path([(-0.62, -0.45), (-0.1, -0.5), (0.0, -0.2),
                                                          (-0.3, dome - 0.1)]), 0.022) * 0.5)
    if _present(f, "sternotomy_wires"):
        ks = np.clip(np.round((y + 0.55) / 0.13), 0, int(f["sternotomy_wires"]["count"]) - 1)
        yk = -0.55 + ks * 0.13
        loops = np.abs(_ellipse_r(x, y, -0.6 + 0.08 * (yk + 0.6), yk, 0.02, 0.035) - 1.0) < 0.35
        metal = np.maximum(metal, loops * 0.7)
    if _present(f, "endotracheal_tube"):
        tip_y = anat["carina_y"] - float(f["endotracheal_tube"]["tip_cm_above_carina"]) / CM_PER_UNIT
        metal = np.maximum(metal, ((np.abs(x - (0.0 + 0.1 * (y + 1))) < 0.022) & (y < tip_y)) * 0.45)
    if _present(f, "nasogastric_tube"):
        end = (-0.05, dome + 0.2) if f["nasogastric_tube"]["tip"] == "stomach" else (0.2, 0.05)
        metal = np.maximum(metal, _stroke(size, _path([(0.15, -1.05), (0.22, -0.2), end]), 0.02) * 0.38)
    if _present(f, "central_line"):
        metal = np.maximum(metal, _stroke(size, _path([(0.0, -1.05), (-0.05, -0.5), (-0.1, -0.2)]), 0.02) * 0.36)
    density += metal
    return _finish(density, nz, rng, size, 1.1)
