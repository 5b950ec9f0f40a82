//! Images made to fit a reply: no side longer than `--max-image-side`, and all the images of one
//! reply within `--max-reply-image-bytes` of base64.
//!
//! The budget is counted in base64 characters, the form an image travels in. Clients that cap a
//! tool result in tokens (25,000 by default in a popular one) count about four characters to a
//! token at most, so base64 length / 4 is a safe estimate of an image's share; the default
//! budget (60,000 characters, about 15,000 tokens) leaves room for a full text reply
//! (`--max-output-bytes`, 32 KiB, about 8,200 tokens).
//!
//! An image within both limits goes as it is, without being decoded. A larger one is decoded,
//! scaled down (aspect kept) to the side limit and encoded as PNG; when that is over what is left
//! of the budget it is encoded as JPEG, then scaled down further step by step, and when even a
//! small one does not fit it is dropped (the caller says where the original is). Pure: bytes in,
//! bytes out.

use std::io::Cursor;

use base64::Engine;
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits, RgbImage};

use crate::config;

/// Image types passed to the client as images (and read back as such), in order of preference.
pub const IMAGE_TYPES: [&str; 2] = ["image/png", "image/jpeg"];

/// Smallest long side an image is shrunk to before it is dropped instead.
const MIN_SIDE: u32 = 256;

/// Each further shrink keeps this share of the sides.
const SHRINK: f64 = 0.75;

/// JPEG quality of re-encoded images.
const JPEG_QUALITY: u8 = 85;

/// Largest side of an image we decode at all (a PNG header can claim anything).
const MAX_DECODED_SIDE: u32 = 30_000;

/// What one reply's images may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Longest side, in pixels.
    pub max_side: u32,
    /// Base64 characters of all the reply's images together.
    pub budget: usize,
}

impl ImageLimits {
    /// What `limits` let the images of one reply take.
    pub fn from_limits(limits: &config::Limits) -> Self {
        ImageLimits { max_side: limits.max_image_side, budget: limits.max_reply_image_bytes }
    }
}

/// An image as it goes into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fitted {
    /// Sent as it is.
    Original {
        /// The base64 data.
        base64: String,
    },
    /// Scaled down and/or re-encoded.
    Scaled {
        /// The base64 data.
        base64: String,
        /// Its MIME type.
        mime: &'static str,
        /// Its size.
        size: (u32, u32),
        /// The original's size.
        original: (u32, u32),
    },
    /// Not sent: no small enough version fits what is left of the budget (or it cannot be
    /// decoded).
    Dropped {
        /// The original's size, when it could be read.
        original: Option<(u32, u32)>,
        /// Why, in words.
        reason: String,
    },
}

/// The images of one reply, fitted one after another into what is left of the budget.
#[derive(Debug)]
pub struct ImageFitter {
    limits: ImageLimits,
    left: usize,
}

impl ImageFitter {
    /// A fresh budget for one reply.
    pub fn new(limits: ImageLimits) -> Self {
        ImageFitter { limits, left: limits.budget }
    }

    /// `bytes` (a PNG or JPEG) made to fit, its size taken from the budget.
    pub fn fit(&mut self, bytes: &[u8]) -> Fitted {
        let fitted = fit(bytes, self.limits.max_side, self.left);
        let used = match &fitted {
            Fitted::Original { base64 } | Fitted::Scaled { base64, .. } => base64.len(),
            Fitted::Dropped { .. } => 0,
        };
        self.left -= used;
        fitted
    }
}

/// `bytes` fitted within `max_side` and `budget` base64 characters.
fn fit(bytes: &[u8], max_side: u32, budget: usize) -> Fitted {
    let encoded_len = bytes.len().div_ceil(3) * 4;
    let original = reader(bytes).and_then(|r| r.into_dimensions().ok());
    if let Some((width, height)) = original
        && width.max(height) <= max_side
        && encoded_len <= budget
    {
        return Fitted::Original { base64: base64(bytes) };
    }
    let Some(image) = reader(bytes).and_then(|r| r.decode().ok()) else {
        return Fitted::Dropped { original, reason: "it could not be decoded".to_owned() };
    };
    let original = (image.width(), image.height());
    let mut side = original.0.max(original.1).min(max_side);
    let mut formats = vec![ImageFormat::Png, ImageFormat::Jpeg];
    loop {
        let scaled = scaled(&image, side);
        for format in std::mem::replace(&mut formats, vec![ImageFormat::Jpeg]) {
            let Some(encoded) = encode(&scaled, format) else { continue };
            let data = base64(&encoded);
            if data.len() <= budget {
                let mime = if format == ImageFormat::Png { "image/png" } else { "image/jpeg" };
                return Fitted::Scaled {
                    base64: data,
                    mime,
                    size: (scaled.width(), scaled.height()),
                    original,
                };
            }
        }
        if side <= MIN_SIDE || side == 1 {
            let reason = format!(
                "even at {side} px on its long side it is over the {budget} base64 bytes left of this reply's image budget"
            );
            return Fitted::Dropped { original: Some(original), reason };
        }
        side = ((f64::from(side) * SHRINK) as u32).max(MIN_SIDE.min(side - 1));
    }
}

/// `image` with its long side at most `side`: averaged over the source pixels of each target
/// pixel when it shrinks by half or more (fast, and no aliasing at such ratios), filtered
/// otherwise (where averaging would alias).
fn scaled(image: &DynamicImage, side: u32) -> DynamicImage {
    let long = image.width().max(image.height());
    if side >= long {
        image.clone()
    } else if long / side >= 2 {
        image.thumbnail(side, side)
    } else {
        image.resize(side, side, FilterType::Triangle)
    }
}

fn reader(bytes: &[u8]) -> Option<ImageReader<Cursor<&[u8]>>> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    reader.limits(limits);
    Some(reader)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Option<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let written = match format {
        ImageFormat::Jpeg => {
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
            encoder.encode_image(&on_white(image))
        }
        format => image.write_to(&mut out, format),
    };
    match written {
        Ok(()) => Some(out.into_inner()),
        Err(error) => {
            tracing::warn!(%error, ?format, "cannot encode a scaled image");
            None
        }
    }
}

/// `image` without transparency, as if drawn on white (JPEG has no alpha; figures are drawn on
/// white).
fn on_white(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_MAX_IMAGE_SIDE, DEFAULT_REPLY_IMAGE_BYTES};

    /// A PNG of `width` x `height` with `noise` pixels (noise does not compress).
    fn png(width: u32, height: u32, noise: bool) -> Vec<u8> {
        let mut state = 1u32;
        let image = RgbImage::from_fn(width, height, |x, y| {
            if noise {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let [a, b, c, _] = state.to_le_bytes();
                image::Rgb([a, b, c])
            } else {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
            }
        });
        encode(&DynamicImage::ImageRgb8(image), ImageFormat::Png).unwrap()
    }

    fn size_of(base64: &str) -> (u32, u32) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(base64).unwrap();
        reader(&bytes).unwrap().into_dimensions().unwrap()
    }

    #[test]
    fn a_small_image_goes_unchanged_and_counts_against_the_budget() {
        let bytes = png(40, 30, false);
        let mut fitter = ImageFitter::new(ImageLimits { max_side: 100, budget: 1 << 20 });
        assert_eq!(fitter.fit(&bytes), Fitted::Original { base64: base64(&bytes) });
        assert_eq!(fitter.left, (1 << 20) - base64(&bytes).len());
    }

    #[test]
    fn a_large_image_is_scaled_to_the_side_limit_with_its_aspect() {
        let bytes = png(4000, 3000, false);
        let mut fitter = ImageFitter::new(ImageLimits { max_side: 1568, budget: 1 << 30 });
        let Fitted::Scaled { base64, mime, size, original } = fitter.fit(&bytes) else {
            panic!("not scaled")
        };
        assert_eq!((mime, size, original), ("image/png", (1568, 1176), (4000, 3000)));
        assert_eq!(size_of(&base64), (1568, 1176));
    }

    #[test]
    fn an_image_over_the_budget_is_shrunk_or_dropped_and_the_budget_holds() {
        let bytes = png(800, 600, true);
        let budget = 120_000;
        let mut fitter = ImageFitter::new(ImageLimits { max_side: 1568, budget });
        let mut sent = 0;
        let mut kinds = Vec::new();
        for _ in 0..4 {
            match fitter.fit(&bytes) {
                Fitted::Scaled { base64, mime, size, .. } => {
                    assert_eq!(mime, "image/jpeg", "noise over the budget is re-encoded as JPEG");
                    assert!(
                        size.0 <= 800 && (f64::from(size.0) / f64::from(size.1) - 4.0 / 3.0).abs() < 0.02,
                        "{size:?}"
                    );
                    sent += base64.len();
                    kinds.push("scaled");
                }
                Fitted::Dropped { original, .. } => {
                    assert_eq!(original, Some((800, 600)));
                    kinds.push("dropped");
                }
                Fitted::Original { .. } => panic!("over the budget, sent unchanged"),
            }
        }
        assert!(sent <= budget, "{sent} > {budget}");
        assert_eq!(kinds.first(), Some(&"scaled"));
        assert_eq!(kinds.last(), Some(&"dropped"), "the budget runs out: {kinds:?}");
    }

    #[test]
    fn garbage_is_dropped_and_transparency_becomes_white() {
        let mut fitter = ImageFitter::new(ImageLimits {
            max_side: DEFAULT_MAX_IMAGE_SIDE,
            budget: DEFAULT_REPLY_IMAGE_BYTES,
        });
        assert!(matches!(fitter.fit(b"not an image"), Fitted::Dropped { original: None, .. }));
        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, image::Rgba([0, 0, 0, 0])));
        assert_eq!(on_white(&clear).get_pixel(0, 0).0, [255, 255, 255]);
    }
}
