//! What `--resize`, `--fit` and `--no-enlarge` mean: the box, how an image goes into it, and
//! each image's slot shape, decided by the planner before anything is decoded. Arithmetic only:
//! no pixel, no file.

/// How `--resize` maps an image onto its slot. Stored in the block's header as its u32 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Fit {
    /// Scale to exactly W x H, ignoring the aspect ratio.
    Stretch = 1,
    /// Scale to cover W x H, keeping the aspect ratio, and crop the overflow (centred).
    Cover = 2,
    /// Scale to fit inside W x H, keeping the aspect ratio; the rest of the slot is black.
    Contain = 3,
    /// Scale to fit inside W x H, keeping the aspect ratio; the slot takes the scaled image's
    /// own shape (no bars). Every image has a slot shape of its own.
    Inside = 4,
}

impl Fit {
    pub fn from_u32(v: u32) -> Option<Fit> {
        Some(match v {
            1 => Fit::Stretch,
            2 => Fit::Cover,
            3 => Fit::Contain,
            4 => Fit::Inside,
            _ => return None,
        })
    }

    pub fn parse(name: &str) -> Option<Fit> {
        Some(match name {
            "stretch" => Fit::Stretch,
            "cover" => Fit::Cover,
            "contain" => Fit::Contain,
            "inside" => Fit::Inside,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Fit::Stretch => "stretch",
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Inside => "inside",
        }
    }
}

/// `--resize` with its `--fit` and `--no-enlarge`: the box (a side may be left free under
/// [`Fit::Inside`]: `800x` sets the width, `x600` the height) and how an image goes into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `--resize S`: the shorter side becomes S, the aspect ratio kept (torchvision's
    /// `Resize(S)`); then `width` and `height` are None and the fit is `inside`.
    pub shorter: Option<u32>,
    pub fit: Fit,
    /// Never enlarge: an image already inside the box keeps its size (ImageMagick's `>`).
    pub no_enlarge: bool,
}

/// What the coordinator says of a resize: `resized to 224x224 (--fit cover)`.
impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |s: Option<u32>| s.map_or(String::new(), |v| v.to_string());
        let (w, h) = (side(self.width), side(self.height));
        match (self.fit, self.shorter) {
            (Fit::Inside, Some(s)) => {
                write!(f, "each resized to a shorter side of {s} (--fit inside")?
            }
            (Fit::Inside, None) => write!(f, "each resized to fit inside {w}x{h} (--fit inside")?,
            (fit, _) => write!(f, "resized to {w}x{h} (--fit {}", fit.name())?,
        }
        if self.no_enlarge {
            write!(f, ", --no-enlarge")?;
        }
        write!(f, ")")
    }
}

/// The sides of a resize, as `--resize` and the `resize:` op write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// `WxH`, `Wx` or `xH`.
    Box(Option<u32>, Option<u32>),
    /// `S`: the shorter side.
    Shorter(u32),
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |s: Option<u32>| s.map_or(String::new(), |v| v.to_string());
        match *self {
            Size::Box(w, h) => write!(f, "{}x{}", side(w), side(h)),
            Size::Shorter(s) => write!(f, "{s}"),
        }
    }
}

/// `WxH`, `Wx`, `xH` or `S`, each side from 1 to 65535.
pub fn parse_size(s: &str) -> Result<Size, String> {
    if let Ok(side) = s.parse::<u32>() {
        return match side {
            1..=65535 => Ok(Size::Shorter(side)),
            _ => Err(format!("{s:?} is not a side from 1 to 65535")),
        };
    }
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| {
        format!("{s:?} is not WxH, Wx, xH or S, for example 1024x768, 800x or 256")
    })?;
    let side = |v: &str| {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=65535).contains(n))
            .map(Some)
            .ok_or_else(|| format!("{v:?} in {s:?} is not a side from 1 to 65535"))
    };
    match (side(w)?, side(h)?) {
        (None, None) => Err(format!("{s:?} gives no side: WxH, Wx, xH or S")),
        (w, h) => Ok(Size::Box(w, h)),
    }
}

/// Why a `--resize` and `--fit` pair cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    #[error("--resize needs at least one side (WxH, Wx or xH)")]
    NoSide,
    #[error("--fit {0} gives every image the box's shape and needs both sides: --resize WxH")]
    NeedsBothSides(&'static str),
    #[error("--no-enlarge goes with --fit inside (--fit {0} gives every image the box's shape)")]
    NoEnlargeNeedsInside(&'static str),
    #[error("--resize S keeps each image's aspect ratio, which --fit {0} does not: use --fit inside, or --resize WxH")]
    ShorterNeedsInside(&'static str),
}

impl Geometry {
    pub fn new(
        (width, height): (Option<u32>, Option<u32>),
        fit: Fit,
        no_enlarge: bool,
    ) -> Result<Geometry, GeometryError> {
        if width.is_none() && height.is_none() {
            return Err(GeometryError::NoSide);
        }
        if fit != Fit::Inside && (width.is_none() || height.is_none()) {
            return Err(GeometryError::NeedsBothSides(fit.name()));
        }
        if fit != Fit::Inside && no_enlarge {
            return Err(GeometryError::NoEnlargeNeedsInside(fit.name()));
        }
        Ok(Geometry {
            width,
            height,
            shorter: None,
            fit,
            no_enlarge,
        })
    }

    /// The geometry of `size` under `fit`: [`Geometry::new`] for a box, else
    /// [`Geometry::shorter_side`].
    pub fn of(size: Size, fit: Fit, no_enlarge: bool) -> Result<Geometry, GeometryError> {
        match size {
            Size::Box(w, h) => Geometry::new((w, h), fit, no_enlarge),
            Size::Shorter(side) => Geometry::shorter_side(side, fit, no_enlarge),
        }
    }

    /// The sides it was asked for.
    pub fn size(&self) -> Size {
        match self.shorter {
            Some(side) => Size::Shorter(side),
            None => Size::Box(self.width, self.height),
        }
    }

    /// `--resize S`: each image's shorter side becomes `side`, its aspect ratio kept (only
    /// `--fit inside` keeps it).
    pub fn shorter_side(side: u32, fit: Fit, no_enlarge: bool) -> Result<Geometry, GeometryError> {
        if fit != Fit::Inside {
            return Err(GeometryError::ShorterNeedsInside(fit.name()));
        }
        Ok(Geometry {
            width: None,
            height: None,
            shorter: Some(side),
            fit,
            no_enlarge,
        })
    }

    /// The slot's `(width, height)` for an image shown as `width x height` (after its EXIF
    /// orientation: the box applies to the turned image).
    ///
    /// Under [`Fit::Inside`] the sizes are libvips `thumbnail`'s: one shrink factor, the larger
    /// of `width / box_width` and `height / box_height` (at least 1 with `--no-enlarge`), each
    /// side's factor capped at that side's length so no side goes below one pixel, and each
    /// side `round(side / factor)`. The limiting side lands on the box exactly.
    pub fn slot_shape(&self, width: u32, height: u32) -> (u32, u32) {
        let (Some(bw), Some(bh)) = (self.width, self.height) else {
            return self.inside(width, height);
        };
        match self.fit {
            Fit::Inside => self.inside(width, height),
            Fit::Stretch | Fit::Cover | Fit::Contain => (bw, bh),
        }
    }

    fn inside(&self, width: u32, height: u32) -> (u32, u32) {
        let (w, h) = (width as f64, height as f64);
        let hshrink = self.width.map_or(0.0, |bw| w / bw as f64);
        let vshrink = self.height.map_or(0.0, |bh| h / bh as f64);
        let mut shrink = match self.shorter {
            Some(s) => w.min(h) / s as f64,
            None => hshrink.max(vshrink),
        };
        if self.no_enlarge {
            shrink = shrink.max(1.0);
        }
        let side = |len: f64| ((len / shrink.min(len)) + 0.5).floor().max(1.0) as u32;
        (side(w), side(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(w: Option<u32>, h: Option<u32>, no_enlarge: bool) -> Geometry {
        Geometry::new((w, h), Fit::Inside, no_enlarge).unwrap()
    }

    #[test]
    fn inside_keeps_the_aspect_ratio_and_fits_the_box() {
        let g = inside(Some(800), Some(600), false);
        assert_eq!(g.slot_shape(1600, 900), (800, 450));
        assert_eq!(g.slot_shape(900, 1600), (338, 600)); // 337.5 rounds up
        assert_eq!(g.slot_shape(640, 427), (800, 534)); // enlarged: 533.75
        assert_eq!(g.slot_shape(4000, 3000), (800, 600));
        // One pixel wide: the width never goes to 0 however much the height shrinks.
        assert_eq!(g.slot_shape(1, 5000), (1, 600));
        assert_eq!(g.slot_shape(5000, 1), (800, 1));
        assert_eq!(g.slot_shape(1, 1), (600, 600));
    }

    #[test]
    fn one_side_sets_the_scale() {
        assert_eq!(
            inside(Some(800), None, false).slot_shape(1600, 900),
            (800, 450)
        );
        assert_eq!(
            inside(None, Some(600), false).slot_shape(1600, 900),
            (1067, 600)
        );
        assert_eq!(inside(Some(256), None, false).slot_shape(3, 7), (256, 597));
    }

    #[test]
    fn a_shorter_side_keeps_the_aspect_ratio() {
        let g = Geometry::shorter_side(256, Fit::Inside, false).unwrap();
        assert_eq!(g.slot_shape(1024, 768), (341, 256));
        assert_eq!(g.slot_shape(768, 1024), (256, 341));
        assert_eq!(g.slot_shape(100, 100), (256, 256));
        let shrink = Geometry::shorter_side(256, Fit::Inside, true).unwrap();
        assert_eq!(shrink.slot_shape(200, 100), (200, 100));
        assert!(Geometry::shorter_side(256, Fit::Cover, false).is_err());
    }

    #[test]
    fn no_enlarge_leaves_small_images_at_their_size() {
        let g = inside(Some(800), Some(600), true);
        assert_eq!(g.slot_shape(640, 427), (640, 427));
        assert_eq!(g.slot_shape(800, 600), (800, 600));
        assert_eq!(g.slot_shape(1600, 900), (800, 450));
        assert_eq!(g.slot_shape(700, 1000), (420, 600));
    }

    #[test]
    fn uniform_fits_give_the_box_and_need_both_sides() {
        for fit in [Fit::Stretch, Fit::Cover, Fit::Contain] {
            let g = Geometry::new((Some(224), Some(224)), fit, false).unwrap();
            assert_eq!(g.slot_shape(1600, 900), (224, 224));
            assert_eq!(
                Geometry::new((Some(224), None), fit, false),
                Err(GeometryError::NeedsBothSides(fit.name()))
            );
            assert!(Geometry::new((Some(224), Some(224)), fit, true).is_err());
        }
        assert_eq!(
            Geometry::new((None, None), Fit::Inside, false),
            Err(GeometryError::NoSide)
        );
    }
}
