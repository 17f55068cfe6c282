from typing_extensions import Buffer

def cuts(
    data: bytes | bytearray | memoryview,
    gear: bytes | bytearray | memoryview,
    min_size: int,
    avg_size: int,
    max_size: int,
    normalization: int = 2,
    final: bool = False,
) -> list[int]: ...
def all_zero(data: Buffer) -> bool: ...
def extents(data: Buffer, start: int, block: int) -> list[tuple[int, int]]: ...
