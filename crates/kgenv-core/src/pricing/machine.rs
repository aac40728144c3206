//! What a machine type is made of, for pricing: its series (which SKUs bill it), vCPUs,
//! memory and the GPUs that come with it. One table, from Google's machine family docs:
//!
//! - general purpose (N1, N2, N2D, E2): <https://cloud.google.com/compute/docs/general-purpose-machines>
//! - accelerator optimized (A2, A3, G2): <https://cloud.google.com/compute/docs/accelerator-optimized-machines>
//! - custom machine types: <https://cloud.google.com/compute/docs/instances/creating-instance-with-custom-machine-type>
//!
//! Memory is kept in thousandths of a GiB (GCE's "GB" of a machine type is a GiB, and the
//! RAM SKUs are priced per GiB-hour): every predefined shape is a whole number of them
//! (an n1-highcpu vCPU has 0.9 GiB), so prices stay exact.

/// A machine series, as its SKUs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// N1 predefined shapes.
    N1,
    /// N1 custom shapes (`custom-8-30720`, `n1-custom-8-30720`).
    N1Custom,
    /// N2.
    N2,
    /// N2D (AMD).
    N2d,
    /// E2.
    E2,
    /// G2 (NVIDIA L4 included).
    G2,
    /// A2 (NVIDIA A100 included).
    A2,
    /// A3 (NVIDIA H100 included).
    A3,
}

impl Series {
    /// The SKU names of this series' vCPUs and memory, as the Billing Catalog describes
    /// them before `running in <place>`.
    pub fn sku_names(self) -> (&'static str, &'static str) {
        match self {
            Self::N1 => ("N1 Predefined Instance Core", "N1 Predefined Instance Ram"),
            Self::N1Custom => ("Custom Instance Core", "Custom Instance Ram"),
            Self::N2 => ("N2 Instance Core", "N2 Instance Ram"),
            Self::N2d => ("N2D AMD Instance Core", "N2D AMD Instance Ram"),
            Self::E2 => ("E2 Instance Core", "E2 Instance Ram"),
            Self::G2 => ("G2 Instance Core", "G2 Instance Ram"),
            Self::A2 => ("A2 Instance Core", "A2 Instance Ram"),
            Self::A3 => ("A3 Instance Core", "A3 Instance Ram"),
        }
    }
}

/// A machine type's billed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Which SKUs bill it.
    pub series: Series,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in thousandths of a GiB.
    pub memory_milli_gib: u64,
    /// GPUs that come with the machine type (A2, A3, G2): accelerator type and count.
    pub gpus: Option<(&'static str, u8)>,
}

/// GiB of memory per vCPU (thousandths) of the predefined `standard`/`highmem`/`highcpu`
/// shapes, and the vCPU counts each exists in.
fn general(series: &str, kind: &str) -> Option<(Series, u64, &'static [u32])> {
    const N1_STD: &[u32] = &[1, 2, 4, 8, 16, 32, 64, 96];
    const N1_OTHER: &[u32] = &[2, 4, 8, 16, 32, 64, 96];
    const N2_STD: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128];
    const N2_CPU: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96];
    const N2D_STD: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224];
    const N2D_MEM: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96];
    const E2_STD: &[u32] = &[2, 4, 8, 16, 32];
    const E2_MEM: &[u32] = &[2, 4, 8, 16];
    Some(match (series, kind) {
        ("n1", "standard") => (Series::N1, 3750, N1_STD),
        ("n1", "highmem") => (Series::N1, 6500, N1_OTHER),
        ("n1", "highcpu") => (Series::N1, 900, N1_OTHER),
        ("n2", "standard") => (Series::N2, 4000, N2_STD),
        ("n2", "highmem") => (Series::N2, 8000, N2_STD),
        ("n2", "highcpu") => (Series::N2, 1000, N2_CPU),
        ("n2d", "standard") => (Series::N2d, 4000, N2D_STD),
        ("n2d", "highmem") => (Series::N2d, 8000, N2D_MEM),
        ("n2d", "highcpu") => (Series::N2d, 1000, N2D_STD),
        ("e2", "standard") => (Series::E2, 4000, E2_STD),
        ("e2", "highmem") => (Series::E2, 8000, E2_MEM),
        ("e2", "highcpu") => (Series::E2, 1000, E2_STD),
        _ => return None,
    })
}

/// Accelerator-optimized shapes: name, series, vCPUs, GiB, GPU type and count.
const ACCELERATOR_SHAPES: &[(&str, Series, u32, u64, &str, u8)] = &[
    ("g2-standard-4", Series::G2, 4, 16, "nvidia-l4", 1),
    ("g2-standard-8", Series::G2, 8, 32, "nvidia-l4", 1),
    ("g2-standard-12", Series::G2, 12, 48, "nvidia-l4", 1),
    ("g2-standard-16", Series::G2, 16, 64, "nvidia-l4", 1),
    ("g2-standard-24", Series::G2, 24, 96, "nvidia-l4", 2),
    ("g2-standard-32", Series::G2, 32, 128, "nvidia-l4", 1),
    ("g2-standard-48", Series::G2, 48, 192, "nvidia-l4", 4),
    ("g2-standard-96", Series::G2, 96, 384, "nvidia-l4", 8),
    ("a2-highgpu-1g", Series::A2, 12, 85, "nvidia-tesla-a100", 1),
    ("a2-highgpu-2g", Series::A2, 24, 170, "nvidia-tesla-a100", 2),
    ("a2-highgpu-4g", Series::A2, 48, 340, "nvidia-tesla-a100", 4),
    ("a2-highgpu-8g", Series::A2, 96, 680, "nvidia-tesla-a100", 8),
    (
        "a2-megagpu-16g",
        Series::A2,
        96,
        1360,
        "nvidia-tesla-a100",
        16,
    ),
    ("a2-ultragpu-1g", Series::A2, 12, 170, "nvidia-a100-80gb", 1),
    ("a2-ultragpu-2g", Series::A2, 24, 340, "nvidia-a100-80gb", 2),
    ("a2-ultragpu-4g", Series::A2, 48, 680, "nvidia-a100-80gb", 4),
    (
        "a2-ultragpu-8g",
        Series::A2,
        96,
        1360,
        "nvidia-a100-80gb",
        8,
    ),
    ("a3-highgpu-1g", Series::A3, 26, 234, "nvidia-h100-80gb", 1),
    ("a3-highgpu-2g", Series::A3, 52, 468, "nvidia-h100-80gb", 2),
    ("a3-highgpu-4g", Series::A3, 104, 936, "nvidia-h100-80gb", 4),
    (
        "a3-highgpu-8g",
        Series::A3,
        208,
        1872,
        "nvidia-h100-80gb",
        8,
    ),
    (
        "a3-megagpu-8g",
        Series::A3,
        208,
        1872,
        "nvidia-h100-mega-80gb",
        8,
    ),
];

/// The GPUs `machine_type` comes with (the accelerator-optimized A2, A3 and G2 shapes),
/// from the one table of them; `None` for a machine type GPUs are attached to (N1) or that
/// has none.
pub fn bundled_gpus(machine_type: &str) -> Option<(&'static str, u8)> {
    ACCELERATOR_SHAPES
        .iter()
        .find(|(name, ..)| *name == machine_type.trim())
        .map(|&(_, _, _, _, gpu, n)| (gpu, n))
}

/// The machine types that come with `gpu` (empty for a GPU attached to N1 instead).
pub fn machine_types_with(gpu: &str) -> Vec<&'static str> {
    ACCELERATOR_SHAPES
        .iter()
        .filter(|s| s.4 == gpu)
        .map(|s| s.0)
        .collect()
}

/// The shape of `machine_type`, or why kgenv cannot price it (a shared-core or other
/// series kgenv has no table for).
///
/// ```
/// use kgenv_core::pricing::machine::{shape, Series};
/// let s = shape("n1-standard-8").expect("known");
/// assert_eq!((s.series, s.vcpus, s.memory_milli_gib), (Series::N1, 8, 30_000));
/// let c = shape("n1-custom-8-30720").expect("custom");
/// assert_eq!((c.series, c.vcpus, c.memory_milli_gib), (Series::N1Custom, 8, 30_000));
/// assert_eq!(shape("a2-highgpu-1g").expect("a2").gpus, Some(("nvidia-tesla-a100", 1)));
/// assert!(shape("e2-micro").is_err());
/// ```
pub fn shape(machine_type: &str) -> Result<Shape, String> {
    let mt = machine_type.trim();
    if let Some(&(_, series, vcpus, gib, gpu, n)) =
        ACCELERATOR_SHAPES.iter().find(|(name, ..)| *name == mt)
    {
        return Ok(Shape {
            series,
            vcpus,
            memory_milli_gib: gib * 1000,
            gpus: Some((gpu, n)),
        });
    }
    let custom = mt
        .strip_prefix("n1-custom-")
        .or_else(|| mt.strip_prefix("custom-"));
    if let Some(rest) = custom {
        return custom_shape(mt, rest);
    }
    let unknown = || {
        format!("kgenv has no price table for machine type `{mt}` (it prices n1/n2/n2d/e2 standard, highmem and highcpu, n1 custom, g2, a2 and a3 shapes)")
    };
    let mut parts = mt.splitn(3, '-');
    let (Some(series), Some(kind), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unknown());
    };
    let (series, milli_per_cpu, sizes) = general(series, kind).ok_or_else(unknown)?;
    let vcpus: u32 = n.parse().map_err(|_| unknown())?;
    if !sizes.contains(&vcpus) {
        return Err(unknown());
    }
    Ok(Shape {
        series,
        vcpus,
        memory_milli_gib: milli_per_cpu * u64::from(vcpus),
        gpus: None,
    })
}

/// `8-30720`: vCPUs and memory in MB (MiB, a multiple of 256 as GCE requires).
fn custom_shape(mt: &str, rest: &str) -> Result<Shape, String> {
    let bad = || format!("custom machine type `{mt}` is not `n1-custom-VCPUS-MEMORY_MB`");
    let (cpus, mb) = rest.split_once('-').ok_or_else(bad)?;
    let vcpus: u32 = cpus.parse().map_err(|_| bad())?;
    let mb: u64 = mb.parse().map_err(|_| bad())?;
    // MiB → thousandths of a GiB is exact for multiples of 128 MiB.
    if vcpus == 0 || mb == 0 || !(mb * 1000).is_multiple_of(1024) {
        return Err(bad());
    }
    Ok(Shape {
        series: Series::N1Custom,
        vcpus,
        memory_milli_gib: mb * 1000 / 1024,
        gpus: None,
    })
}

/// The Billing Catalog's name of a GPU (accelerator type), before `running in <place>`.
pub fn gpu_sku_name(accelerator: &str) -> Option<&'static str> {
    Some(match accelerator {
        "nvidia-tesla-t4" => "Nvidia Tesla T4 GPU",
        "nvidia-tesla-v100" => "Nvidia Tesla V100 GPU",
        "nvidia-tesla-p100" => "Nvidia Tesla P100 GPU",
        "nvidia-tesla-p4" => "Nvidia Tesla P4 GPU",
        "nvidia-l4" => "Nvidia L4 GPU",
        "nvidia-tesla-a100" => "Nvidia Tesla A100 GPU",
        "nvidia-a100-80gb" => "Nvidia Tesla A100 80GB GPU",
        "nvidia-h100-80gb" => "Nvidia H100 80GB GPU",
        _ => return None,
    })
}

/// The Billing Catalog's name of a persistent disk type's capacity.
pub fn disk_sku_name(disk_type: &str) -> Option<&'static str> {
    Some(match disk_type {
        "pd-standard" => "Storage PD Capacity",
        "pd-balanced" => "Balanced PD Capacity",
        "pd-ssd" => "SSD backed PD Capacity",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_shapes_follow_the_documented_ratios() {
        let s = shape("n1-highmem-4").expect("known");
        assert_eq!((s.vcpus, s.memory_milli_gib), (4, 26_000));
        let s = shape("n1-highcpu-2").expect("known");
        assert_eq!(s.memory_milli_gib, 1_800);
        let s = shape("n2d-standard-224").expect("known");
        assert_eq!((s.series, s.memory_milli_gib), (Series::N2d, 896_000));
        let s = shape("g2-standard-24").expect("known");
        assert_eq!(s.gpus, Some(("nvidia-l4", 2)));
        for bad in [
            "n1-standard-3",
            "n1-standard",
            "x1-standard-4",
            "custom-8",
            "custom-8-1000",
        ] {
            assert!(shape(bad).is_err(), "{bad}");
        }
        assert_eq!(
            shape("custom-2-13312").expect("custom").memory_milli_gib,
            13_000
        );
    }
}
