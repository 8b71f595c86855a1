<?php
// Shared by big.php and sha.php so that both see exactly the same content:
// 1 KiB blocks, block k being sprintf("%07d\n", k) repeated 128 times,
// produced in 64 KiB chunks.

const BIG_BLOCKS_PER_CHUNK = 64;

// big_mebibytes returns the requested size from ?mb=N (default 20).
function big_mebibytes(): int
{
    $mb = isset($_GET['mb']) ? (int)$_GET['mb'] : 20;
    return max(0, min($mb, 4096));
}

// big_chunks yields the content of $mb MiB in 64 KiB chunks.
function big_chunks(int $mb): Generator
{
    $blocks = $mb * 1024;
    for ($k = 0; $k < $blocks; $k += BIG_BLOCKS_PER_CHUNK) {
        $chunk = '';
        for ($i = $k; $i < $k + BIG_BLOCKS_PER_CHUNK; $i++) {
            $chunk .= str_repeat(sprintf("%07d\n", $i), 128);
        }
        yield $chunk;
    }
}
