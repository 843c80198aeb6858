//! Kernel throughput: each op chain on RGB slots of 1920x1080 and 4000x3000, reported by
//! criterion in elements (pixels) per second, i.e. MP/s.
//!
//!     cargo bench -p shmpipe-benches --bench kernels

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::ArrayViewMut3;
use shmpipe_worker::ops::{OpChain, Scratch};

fn photo_like(h: usize, w: usize) -> Vec<u8> {
    // Gradients, noise and edges, so no kernel sees a trivially flat image.
    let mut state = 0x2545_f491u32;
    let mut px = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let edge = if (x / 64 + y / 64) % 2 == 0 { 60 } else { 0 };
            px.push(((x * 255 / w) as u32 + edge + (state & 15)) as u8);
            px.push(((y * 255 / h) as u32 + (state >> 8 & 15)) as u8);
            px.push((((x + y) % 256) as u32 ^ (state >> 16 & 7)) as u8);
        }
    }
    px
}

fn kernels(c: &mut Criterion) {
    let chains = [
        "invert",
        "scale:1.2,contrast:1.3,gamma:2.2,threshold:100",
        "grayscale",
        "blur:2",
        "sharpen",
        "flip-h",
        "flip-v",
        "grayscale,blur:2",
    ];
    for (w, h) in [(1920usize, 1080usize), (4000, 3000)] {
        let mut group = c.benchmark_group(format!("kernels/{w}x{h}x3"));
        group.throughput(Throughput::Elements((w * h) as u64));
        group.sample_size(10);
        let original = photo_like(h, w);
        for chain in chains {
            let ops = OpChain::parse(chain).unwrap();
            let mut scratch = Scratch::default();
            let mut px = original.clone();
            group.bench_with_input(BenchmarkId::from_parameter(chain), &ops, |b, ops| {
                b.iter(|| {
                    px.copy_from_slice(&original);
                    let view = ArrayViewMut3::from_shape((h, w, 3), &mut px[..]).unwrap();
                    ops.apply(view, &mut scratch);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
