//! Per-shape tables: position order, required prefixes, shells and reshaping
//! maps (ORTHO.md §3–5).
//!
//! Everything here is pure geometry, independent of any text. Tables are built
//! once per shape on first use and shared process-wide, so the search engine
//! never recomputes coordinates in its hot path.

use std::sync::OnceLock;

/// Largest capacity (product of sizes) a shape may have. Orthos that would
/// grow beyond it are reported as an error instead of being searched.
pub const MAX_CAPACITY: usize = 1024;

/// Index of a shape in the process-wide shape list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShapeId(pub u16);

/// What may go into one slot: the lines that end at it and its shell.
#[derive(Debug)]
pub struct SlotRule {
    /// For each axis along which the slot is not at 0: the positions of the
    /// slots before it on that axis, in axis order (the required prefix).
    pub prefixes: Vec<Box<[u16]>>,
    /// Positions of the other slots in the same shell.
    pub shell_peers: Box<[u16]>,
}

/// A reshaping into a larger shape: where every old position moves.
#[derive(Debug)]
pub struct Reshape {
    /// The larger shape, or `None` when it exceeds [`MAX_CAPACITY`].
    pub target: Option<ShapeId>,
    /// The larger shape's sizes (kept even when it has no id, for errors).
    pub target_dims: Box<[usize]>,
    /// `map[old_position] = new_position`.
    pub map: Box<[u16]>,
    /// This reshaping's index among the target's [`ShapeTable::sources`].
    pub source_index: usize,
}

/// How a shape is reached from a smaller one (ORTHO.md §5 read backwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// The source is this shape with `axis` one shorter (an over-reshaping).
    Over {
        /// The axis that grew.
        axis: usize,
    },
    /// The source has one axis fewer, all sizes 2 (an up-reshaping that
    /// inserted this shape's `axis`).
    Up {
        /// The new axis.
        axis: usize,
    },
}

/// One shape a shape can be reshaped from, with the geometry of that step.
#[derive(Debug)]
pub struct Source {
    /// The smaller shape.
    pub shape: ShapeId,
    /// Which reshaping leads from it.
    pub kind: SourceKind,
    /// `map[source_position] = position here`: where a full source grid lands.
    pub map: Box<[u16]>,
    /// The positions here that the source grid lands on (its footprint),
    /// ascending.
    pub footprint: Box<[u16]>,
    /// The other positions, ascending: after the reshaping they are empty,
    /// and the search fills them in this order.
    pub outside: Box<[u16]>,
    /// For shapes of at most 64 slots, the same sets as bit masks (bit `p`
    /// for position `p`), and the masks of the first `j` outside positions.
    pub masks: Option<SourceMasks>,
}

/// A source's footprint and outside as bit masks over positions.
#[derive(Debug)]
pub struct SourceMasks {
    /// The footprint.
    pub footprint: u64,
    /// The outside positions.
    pub outside: u64,
    /// `prefix[j]`: the first `j` outside positions.
    pub prefix: Box<[u64]>,
}

impl SourceMasks {
    /// The masks of a source's `footprint` and `outside` positions.
    fn new(footprint: &[u16], outside: &[u16]) -> Self {
        let mask = |positions: &[u16]| positions.iter().fold(0u64, |mask, &p| mask | 1 << p);
        Self {
            footprint: mask(footprint),
            outside: mask(outside),
            prefix: (0..=outside.len()).map(|j| mask(&outside[..j])).collect(),
        }
    }
}

/// Everything the search needs to know about one shape.
#[derive(Debug)]
pub struct ShapeTable {
    /// Sizes, non-increasing.
    pub dims: Box<[usize]>,
    /// Product of the sizes.
    pub capacity: usize,
    /// Product of `size - 1`.
    pub volume: u64,
    /// Coordinate of every position.
    pub coords: Vec<Box<[usize]>>,
    /// Slot rule of every position.
    pub slots: Vec<SlotRule>,
    /// Over-reshapings, in ORTHO.md order.
    pub over: Vec<Reshape>,
    /// Up-reshapings indexed by `p` (`0..=k`); empty unless every size is 2.
    pub up: Vec<Reshape>,
    /// The shapes this one is reshaped from: over sources by axis, then up
    /// sources by axis. Empty for the start shape `[2, 2]`.
    pub sources: Vec<Source>,
    /// Seed of the ortho id hash: a stable hash of `dims`.
    pub id_seed: u64,
}

impl ShapeTable {
    /// Whether this is the start shape `[2, 2]`.
    pub fn is_start(&self) -> bool {
        *self.dims == [2, 2]
    }
}

/// The process-wide list of shapes and their lazily built tables.
pub struct Spatial {
    /// Every shape, by number of axes, then in lexicographic order; a
    /// shape's id is its index.
    dims: Vec<Box<[usize]>>,
    /// Per number of axes, where its shapes begin in `dims` (and, one
    /// further, where they end).
    by_axes: Vec<usize>,
    tables: Vec<OnceLock<ShapeTable>>,
}

/// Builds the shape list on a thread of its own, so that it is ready (or
/// nearly) when a search first asks for it: a process that reads texts and
/// opens its state first saves the 2 ms it takes.
pub fn prepare_in_background() {
    std::thread::spawn(|| {
        shapes();
    });
}

/// The shared shape tables.
pub fn shapes() -> &'static Spatial {
    static SPATIAL: OnceLock<Spatial> = OnceLock::new();
    SPATIAL.get_or_init(Spatial::enumerate)
}

impl Spatial {
    fn enumerate() -> Self {
        // A walk that tries sizes in increasing order meets the shapes of
        // each number of axes in lexicographic order: they are gathered by
        // number of axes, and nothing is sorted.
        let mut by_length = Vec::new();
        collect_shapes(&mut Vec::new(), MAX_CAPACITY, 1, &mut by_length);
        let mut dims = Vec::new();
        let mut by_axes = vec![0; 3];
        for shapes in by_length.into_iter().skip(2) {
            dims.extend(shapes);
            by_axes.push(dims.len());
        }
        let tables = dims.iter().map(|_| OnceLock::new()).collect();
        Self {
            dims,
            by_axes,
            tables,
        }
    }

    /// The id of the start shape `[2, 2]`.
    pub fn start(&self) -> ShapeId {
        ShapeId(0)
    }

    /// The id of a shape, if it is a valid shape within [`MAX_CAPACITY`].
    pub fn id(&self, dims: &[usize]) -> Option<ShapeId> {
        let axes = dims.len();
        let (&start, &end) = (self.by_axes.get(axes)?, self.by_axes.get(axes + 1)?);
        let at = self.dims[start..end]
            .binary_search_by(|shape| (**shape).cmp(dims))
            .ok()?;
        Some(ShapeId((start + at) as u16))
    }

    /// The table of a shape, built on first use.
    #[inline]
    pub fn table(&self, shape: ShapeId) -> &ShapeTable {
        self.tables[shape.0 as usize].get_or_init(|| self.build(&self.dims[shape.0 as usize]))
    }

    /// The table of a shape id read from outside (e.g. a file), if the id exists.
    pub fn table_checked(&self, shape: ShapeId) -> Option<&ShapeTable> {
        (usize::from(shape.0) < self.dims.len()).then(|| self.table(shape))
    }

    /// Builds the table of a shape from its geometry alone.
    fn build(&self, dims: &[usize]) -> ShapeTable {
        let order = PositionOrder::new(dims);
        let slots = order
            .coords
            .iter()
            .map(|coord| order.slot_rule(coord))
            .collect();
        let over = self.over_reshapes(&order);
        let up = self.up_reshapes(&order);
        let sources = source_list(dims)
            .into_iter()
            .map(|(source, kind)| self.source(&order, &source, kind))
            .collect();

        ShapeTable {
            capacity: order.coords.len(),
            volume: dims.iter().map(|&size| size as u64 - 1).product(),
            id_seed: dims_hash(dims),
            dims: dims.into(),
            coords: order.coords,
            slots,
            over,
            up,
            sources,
        }
    }

    /// The over-reshapings of the shape `order` is of, in ORTHO.md order.
    fn over_reshapes(&self, order: &PositionOrder) -> Vec<Reshape> {
        over_targets(&order.dims)
            .into_iter()
            .map(|(axis, target)| {
                let kind = SourceKind::Over { axis };
                self.reshape(order, target, kind, |coord| coord.to_vec())
            })
            .collect()
    }

    /// The up-reshapings of the shape `order` is of, indexed by `p`; none
    /// unless every size is 2.
    fn up_reshapes(&self, order: &PositionOrder) -> Vec<Reshape> {
        let k = order.dims.len();
        if order.dims.iter().all(|&size| size == 2) {
            (0..=k)
                .map(|p| {
                    let target = vec![2; k + 1];
                    let kind = SourceKind::Up { axis: k - p };
                    self.reshape(order, target, kind, |coord| {
                        let mut moved = coord.to_vec();
                        moved.insert(k - p, 0);
                        moved
                    })
                })
                .collect()
        } else {
            Vec::new()
        }
    }

    /// The smaller shape `source`, reshaped by `kind` into the shape `order`
    /// is of: where its grid lands and which positions it leaves empty.
    fn source(&self, order: &PositionOrder, source: &[usize], kind: SourceKind) -> Source {
        let from = PositionOrder::new(source);
        let map: Box<[u16]> = from
            .coords
            .iter()
            .map(|coord| {
                let mut moved = coord.to_vec();
                if let SourceKind::Up { axis } = kind {
                    moved.insert(axis, 0);
                }
                order.position(&moved) as u16
            })
            .collect();
        let mut footprint = map.to_vec();
        footprint.sort_unstable();
        let outside: Box<[u16]> = (0..order.coords.len() as u16)
            .filter(|position| footprint.binary_search(position).is_err())
            .collect();
        let masks = (order.coords.len() <= 64).then(|| SourceMasks::new(&footprint, &outside));
        Source {
            shape: self.id(source).expect("a source is smaller than its shape"),
            kind,
            map,
            footprint: footprint.into(),
            outside,
            masks,
        }
    }

    fn reshape(
        &self,
        from: &PositionOrder,
        target: Vec<usize>,
        kind: SourceKind,
        move_coord: impl Fn(&[usize]) -> Vec<usize>,
    ) -> Reshape {
        let to = PositionOrder::new(&target);
        let map = from
            .coords
            .iter()
            .map(|coord| to.position(&move_coord(coord)) as u16)
            .collect();
        let source_index = source_list(&target)
            .iter()
            .position(|(_, listed)| *listed == kind)
            .expect("every reshaping is a source of its target");
        Reshape {
            target: self.id(&target),
            target_dims: target.into(),
            map,
            source_index,
        }
    }
}

/// The over-reshapings of a shape: for each distinct size in order of first
/// appearance, the first axis of that size grown by one.
fn over_targets(dims: &[usize]) -> Vec<(usize, Vec<usize>)> {
    let mut seen_sizes = Vec::new();
    let mut targets = Vec::new();
    for (axis, &size) in dims.iter().enumerate() {
        if !seen_sizes.contains(&size) {
            seen_sizes.push(size);
            let mut grown = dims.to_vec();
            grown[axis] += 1;
            targets.push((axis, grown));
        }
    }
    targets
}

/// The shapes `dims` is reshaped from, in the order of
/// [`ShapeTable::sources`]: an over-reshaping grows the first axis of its
/// size, so `dims` came from shrinking the *last* axis of each size of at
/// least 3; an up-reshaping (three or more axes, all of size 2) may have
/// inserted any axis.
fn source_list(dims: &[usize]) -> Vec<(Vec<usize>, SourceKind)> {
    let k = dims.len();
    let mut sources = Vec::new();
    for axis in 0..k {
        let last_of_its_size = axis + 1 == k || dims[axis + 1] < dims[axis];
        if dims[axis] >= 3 && last_of_its_size {
            let mut smaller = dims.to_vec();
            smaller[axis] -= 1;
            sources.push((smaller, SourceKind::Over { axis }));
        }
    }
    if k >= 3 && dims.iter().all(|&size| size == 2) {
        for axis in 0..k {
            sources.push((vec![2; k - 1], SourceKind::Up { axis }));
        }
    }
    sources
}

/// Every non-increasing list of sizes >= 2, of length >= 2, with product
/// <= [`MAX_CAPACITY`], that begins with `prefix`, into `by_length` by its
/// length, each length's in lexicographic order.
fn collect_shapes(
    prefix: &mut Vec<usize>,
    max_size: usize,
    product: usize,
    by_length: &mut Vec<Vec<Box<[usize]>>>,
) {
    let length = prefix.len();
    if length >= 2 {
        if by_length.len() <= length {
            by_length.resize_with(length + 1, Vec::new);
        }
        by_length[length].push(prefix.as_slice().into());
    }
    let largest = max_size.min(MAX_CAPACITY / product);
    for size in 2..=largest {
        prefix.push(size);
        collect_shapes(prefix, size, product * size, by_length);
        prefix.pop();
    }
}

/// The position order of one shape and its inverse.
struct PositionOrder {
    dims: Vec<usize>,
    coords: Vec<Box<[usize]>>,
    /// Position of each coordinate, indexed by its row-major index.
    rank: Vec<usize>,
}

impl PositionOrder {
    fn new(dims: &[usize]) -> Self {
        let capacity: usize = dims.iter().product();
        let mut coords: Vec<Box<[usize]>> = (0..capacity)
            .map(|index| unflatten(dims, index).into())
            .collect();
        coords.sort_by(|a, b| {
            let shell_a: usize = a.iter().sum();
            let shell_b: usize = b.iter().sum();
            shell_a.cmp(&shell_b).then_with(|| a.cmp(b))
        });
        let mut rank = vec![0; capacity];
        for (position, coord) in coords.iter().enumerate() {
            rank[flatten(dims, coord)] = position;
        }
        Self {
            dims: dims.to_vec(),
            coords,
            rank,
        }
    }

    fn position(&self, coord: &[usize]) -> usize {
        self.rank[flatten(&self.dims, coord)]
    }

    /// The slot rule of the slot at `coord`: its required prefixes along
    /// every axis where it is not at 0, and its shell peers.
    fn slot_rule(&self, coord: &[usize]) -> SlotRule {
        let k = self.dims.len();
        let prefixes = (0..k)
            .filter(|&axis| coord[axis] > 0)
            .map(|axis| {
                let mut walker = coord.to_vec();
                (0..coord[axis])
                    .map(|step| {
                        walker[axis] = step;
                        self.position(&walker) as u16
                    })
                    .collect()
            })
            .collect();
        let shell: usize = coord.iter().sum();
        let shell_peers = self
            .coords
            .iter()
            .enumerate()
            .filter(|(_, other)| other.iter().sum::<usize>() == shell && other[..] != *coord)
            .map(|(position, _)| position as u16)
            .collect();
        SlotRule {
            prefixes,
            shell_peers,
        }
    }
}

/// Every coordinate of `dims` in position order (by shell, then
/// lexicographically), for any sizes, including shapes without a table.
pub fn coordinates_in_position_order(dims: &[usize]) -> Vec<Box<[usize]>> {
    PositionOrder::new(dims).coords
}

/// The row-major index of `coord` (axis 0 most significant).
pub fn flatten(dims: &[usize], coord: &[usize]) -> usize {
    dims.iter()
        .zip(coord)
        .fold(0, |index, (&size, &component)| index * size + component)
}

/// The coordinate at row-major index `index`.
pub fn unflatten(dims: &[usize], mut index: usize) -> Vec<usize> {
    let mut coord = vec![0; dims.len()];
    for axis in (0..dims.len()).rev() {
        coord[axis] = index % dims[axis];
        index /= dims[axis];
    }
    coord
}

/// A stable hash of a shape's sizes, the seed of its orthos' ids.
fn dims_hash(dims: &[usize]) -> u64 {
    let bytes: Vec<u8> = dims
        .iter()
        .flat_map(|&size| (size as u32).to_le_bytes())
        .collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dims: &[usize]) -> &'static ShapeTable {
        shapes().table(shapes().id(dims).unwrap())
    }

    #[test]
    fn position_order_of_three_by_three() {
        let coords: Vec<Vec<usize>> = table(&[3, 3]).coords.iter().map(|c| c.to_vec()).collect();
        let expected = [
            [0, 0],
            [0, 1],
            [1, 0],
            [0, 2],
            [1, 1],
            [2, 0],
            [1, 2],
            [2, 1],
            [2, 2],
        ];
        assert_eq!(coords, expected.map(|c| c.to_vec()));
    }

    #[test]
    fn required_prefixes_and_shell_of_two_by_two_corner() {
        let slot = &table(&[2, 2]).slots[3];
        let prefixes: Vec<Vec<u16>> = slot.prefixes.iter().map(|p| p.to_vec()).collect();
        // (1,1): along axis 0 the slot (0,1) = position 1, along axis 1 (1,0) = position 2.
        assert_eq!(prefixes, vec![vec![1], vec![2]]);
        assert!(slot.shell_peers.is_empty());
        assert_eq!(&*table(&[2, 2]).slots[1].shell_peers, &[2]);
    }

    #[test]
    fn over_reshapings_grow_first_axis_of_each_size() {
        let targets = |dims: &[usize]| -> Vec<Vec<usize>> {
            table(dims)
                .over
                .iter()
                .map(|r| r.target_dims.to_vec())
                .collect()
        };
        assert_eq!(targets(&[2, 2]), vec![vec![3, 2]]);
        assert_eq!(targets(&[3, 2]), vec![vec![4, 2], vec![3, 3]]);
        assert_eq!(targets(&[2, 2, 2]), vec![vec![3, 2, 2]]);
        assert_eq!(targets(&[3, 3, 2]), vec![vec![4, 3, 2], vec![3, 3, 3]]);
    }

    #[test]
    fn up_reshapings_exist_only_for_all_twos() {
        assert_eq!(table(&[2, 2]).up.len(), 3);
        assert!(table(&[3, 2]).up.is_empty());
        assert_eq!(&*table(&[2, 2]).up[2].map, &[0, 1, 2, 4]);
    }

    #[test]
    fn no_shape_has_more_axes_than_a_slot_has_prefix_room_for() {
        let most_axes = shapes().dims.iter().map(|d| d.len()).max().unwrap();
        assert_eq!(most_axes, 10, "ortho::MAX_PREFIXES assumes at most 10 axes");
    }

    #[test]
    fn sources_are_the_reshapings_read_backwards() {
        let kinds = |dims: &[usize]| -> Vec<(Vec<usize>, SourceKind)> {
            table(dims)
                .sources
                .iter()
                .map(|s| (shapes().table(s.shape).dims.to_vec(), s.kind))
                .collect()
        };
        assert!(kinds(&[2, 2]).is_empty());
        assert_eq!(
            kinds(&[3, 2]),
            vec![(vec![2, 2], SourceKind::Over { axis: 0 })]
        );
        assert_eq!(
            kinds(&[3, 3]),
            vec![(vec![3, 2], SourceKind::Over { axis: 1 })]
        );
        assert_eq!(
            kinds(&[4, 3]),
            vec![
                (vec![3, 3], SourceKind::Over { axis: 0 }),
                (vec![4, 2], SourceKind::Over { axis: 1 })
            ]
        );
        assert_eq!(
            kinds(&[2, 2, 2]),
            (0..3)
                .map(|axis| (vec![2, 2], SourceKind::Up { axis }))
                .collect::<Vec<_>>()
        );
        // Every reshaping of every shape up to 64 slots is one of its
        // target's sources, with the same geometry.
        for (index, dims) in shapes().dims.iter().enumerate() {
            if dims.iter().product::<usize>() > 64 {
                continue;
            }
            let from = shapes().table(ShapeId(index as u16));
            for reshape in from.over.iter().chain(&from.up) {
                let Some(target) = reshape.target else {
                    continue;
                };
                let source = &shapes().table(target).sources[reshape.source_index];
                assert_eq!(source.shape, ShapeId(index as u16));
                assert_eq!(source.map, reshape.map);
                assert_eq!(
                    source.footprint.len() + source.outside.len(),
                    shapes().table(target).capacity
                );
            }
        }
    }

    #[test]
    fn the_last_position_is_never_in_a_footprint() {
        for dims in [&[3, 2][..], &[4, 3], &[2, 2, 2], &[3, 3, 2], &[2, 2, 2, 2]] {
            let shape = table(dims);
            for source in &shape.sources {
                assert_eq!(*source.outside.last().unwrap() as usize, shape.capacity - 1);
            }
        }
    }

    /// Shape ids are stored (in histories and checkpoints), so their order
    /// is fixed: by number of axes, then lexicographic; every shape of at
    /// least two non-increasing sizes of 2 or more, within the capacity.
    #[test]
    fn shapes_are_numbered_by_axes_then_lexicographically() {
        let all = &shapes().dims;
        assert_eq!(all.len(), 6552);
        assert_eq!(*all[0], [2, 2]);
        assert_eq!(shapes().start(), ShapeId(0));
        for pair in all.windows(2) {
            let order = pair[0]
                .len()
                .cmp(&pair[1].len())
                .then(pair[0].cmp(&pair[1]));
            assert_eq!(
                order,
                std::cmp::Ordering::Less,
                "{:?} {:?}",
                pair[0],
                pair[1]
            );
        }
        for (index, dims) in all.iter().enumerate() {
            assert!(dims.len() >= 2 && dims.windows(2).all(|w| w[0] >= w[1]));
            assert!(dims.iter().all(|&size| size >= 2));
            assert!(dims.iter().product::<usize>() <= MAX_CAPACITY);
            assert_eq!(shapes().id(dims), Some(ShapeId(index as u16)));
        }
        assert_eq!(shapes().id(&[]), None);
        assert_eq!(shapes().id(&[5]), None);
        assert_eq!(shapes().id(&[1024, 2]), None);
    }

    #[test]
    fn shapes_beyond_capacity_have_no_id() {
        assert!(shapes().id(&[2; 11]).is_none());
        assert!(shapes().id(&[2; 10]).is_some());
        assert!(
            shapes().id(&[2, 3]).is_none(),
            "increasing shapes never occur"
        );
    }
}
