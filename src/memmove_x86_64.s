# sealkit_memmove(dst: rdi, src: rsi, n: rdx) -> dst in rax: memmove for baseline x86-64
# (SSE2, which every x86-64 CPU has). See src/memmove.rs for why it exists and which
# builds export it as memcpy and memmove.
#
# Every size class loads all the bytes it copies before it stores any, so overlapping
# buffers are copied correctly in both directions, and memcpy can be the same function
# (as in glibc). Above 128 bytes the middle is copied in 64-byte steps with aligned
# stores, front to back when the destination starts before the source (or the two do not
# overlap) and back to front otherwise; the first and the last 16 bytes are loaded before
# the loop and stored after it, so the loop never meets an unaligned edge.
    .section .text.sealkit_memmove,"ax",@progbits
    .p2align 5
    .globl sealkit_memmove
    .type sealkit_memmove,@function
sealkit_memmove:
    mov     %rdi, %rax
    cmp     $16, %rdx
    jb      .Lsealkit_mm_under16
    cmp     $32, %rdx
    ja      .Lsealkit_mm_over32
    # 16..32 bytes: the first and the last 16, which overlap when n < 32.
    movdqu  (%rsi), %xmm0
    movdqu  -16(%rsi,%rdx), %xmm1
    movdqu  %xmm0, (%rdi)
    movdqu  %xmm1, -16(%rdi,%rdx)
    ret

.Lsealkit_mm_over32:
    cmp     $64, %rdx
    ja      .Lsealkit_mm_over64
    # 33..64 bytes: the first 32 and the last 32.
    movdqu  (%rsi), %xmm0
    movdqu  16(%rsi), %xmm1
    movdqu  -32(%rsi,%rdx), %xmm2
    movdqu  -16(%rsi,%rdx), %xmm3
    movdqu  %xmm0, (%rdi)
    movdqu  %xmm1, 16(%rdi)
    movdqu  %xmm2, -32(%rdi,%rdx)
    movdqu  %xmm3, -16(%rdi,%rdx)
    ret

.Lsealkit_mm_over64:
    cmp     $128, %rdx
    ja      .Lsealkit_mm_over128
    # 65..128 bytes: the first 64 and the last 64.
    movdqu  (%rsi), %xmm0
    movdqu  16(%rsi), %xmm1
    movdqu  32(%rsi), %xmm2
    movdqu  48(%rsi), %xmm3
    movdqu  -64(%rsi,%rdx), %xmm4
    movdqu  -48(%rsi,%rdx), %xmm5
    movdqu  -32(%rsi,%rdx), %xmm6
    movdqu  -16(%rsi,%rdx), %xmm7
    movdqu  %xmm0, (%rdi)
    movdqu  %xmm1, 16(%rdi)
    movdqu  %xmm2, 32(%rdi)
    movdqu  %xmm3, 48(%rdi)
    movdqu  %xmm4, -64(%rdi,%rdx)
    movdqu  %xmm5, -48(%rdi,%rdx)
    movdqu  %xmm6, -32(%rdi,%rdx)
    movdqu  %xmm7, -16(%rdi,%rdx)
    ret

.Lsealkit_mm_over128:
    movdqu  (%rsi), %xmm8               # the first 16 source bytes
    movdqu  -16(%rsi,%rdx), %xmm9       # the last 16
    lea     (%rdi,%rdx), %r9            # r9: the end of the destination
    mov     %rdi, %rcx
    sub     %rsi, %rcx
    cmp     %rdx, %rcx
    jb      .Lsealkit_mm_backward       # dst - src < n (unsigned): dst starts inside src

    # Front to back. r8 walks the destination from its first 16-aligned address after
    # dst; the first 1..16 bytes before it are the head's.
    lea     16(%rdi), %r8
    and     $-16, %r8
    mov     %r8, %rcx
    sub     %rdi, %rcx
    add     %rcx, %rsi                  # rsi: the source of r8's bytes
    sub     %rcx, %rdx                  # rdx: bytes from r8 to the end
    cmp     $64, %rdx
    jb      .Lsealkit_mm_fwd16
.Lsealkit_mm_fwd64:
    movdqu  (%rsi), %xmm0
    movdqu  16(%rsi), %xmm1
    movdqu  32(%rsi), %xmm2
    movdqu  48(%rsi), %xmm3
    movdqa  %xmm0, (%r8)
    movdqa  %xmm1, 16(%r8)
    movdqa  %xmm2, 32(%r8)
    movdqa  %xmm3, 48(%r8)
    add     $64, %rsi
    add     $64, %r8
    sub     $64, %rdx
    cmp     $64, %rdx
    jae     .Lsealkit_mm_fwd64
.Lsealkit_mm_fwd16:
    cmp     $16, %rdx
    jbe     .Lsealkit_mm_edges              # the last <= 16 bytes are the tail's
    movdqu  (%rsi), %xmm0
    movdqa  %xmm0, (%r8)
    add     $16, %rsi
    add     $16, %r8
    sub     $16, %rdx
    jmp     .Lsealkit_mm_fwd16

    # Back to front. r8 walks the destination down from its last 16-aligned address at or
    # before its end; the 0..15 bytes after it are the tail's.
.Lsealkit_mm_backward:
    mov     %r9, %r8
    and     $-16, %r8
    mov     %r9, %rcx
    sub     %r8, %rcx
    lea     (%rsi,%rdx), %r10
    sub     %rcx, %r10                  # r10: the source end of r8's bytes
    sub     %rcx, %rdx                  # rdx: bytes from dst to r8
    cmp     $64, %rdx
    jb      .Lsealkit_mm_bwd16
.Lsealkit_mm_bwd64:
    movdqu  -16(%r10), %xmm0
    movdqu  -32(%r10), %xmm1
    movdqu  -48(%r10), %xmm2
    movdqu  -64(%r10), %xmm3
    movdqa  %xmm0, -16(%r8)
    movdqa  %xmm1, -32(%r8)
    movdqa  %xmm2, -48(%r8)
    movdqa  %xmm3, -64(%r8)
    sub     $64, %r10
    sub     $64, %r8
    sub     $64, %rdx
    cmp     $64, %rdx
    jae     .Lsealkit_mm_bwd64
.Lsealkit_mm_bwd16:
    cmp     $16, %rdx
    jbe     .Lsealkit_mm_edges              # the first <= 16 bytes are the head's
    movdqu  -16(%r10), %xmm0
    movdqa  %xmm0, -16(%r8)
    sub     $16, %r10
    sub     $16, %r8
    sub     $16, %rdx
    jmp     .Lsealkit_mm_bwd16

.Lsealkit_mm_edges:
    movdqu  %xmm9, -16(%r9)
    movdqu  %xmm8, (%rdi)
    ret

.Lsealkit_mm_under16:
    cmp     $8, %rdx
    jb      .Lsealkit_mm_under8
    # 8..15 bytes: the first and the last 8.
    mov     (%rsi), %rcx
    mov     -8(%rsi,%rdx), %r8
    mov     %rcx, (%rdi)
    mov     %r8, -8(%rdi,%rdx)
    ret
.Lsealkit_mm_under8:
    cmp     $4, %rdx
    jb      .Lsealkit_mm_under4
    # 4..7 bytes: the first and the last 4.
    mov     (%rsi), %ecx
    mov     -4(%rsi,%rdx), %r8d
    mov     %ecx, (%rdi)
    mov     %r8d, -4(%rdi,%rdx)
    ret
.Lsealkit_mm_under4:
    test    %rdx, %rdx
    jz      .Lsealkit_mm_done
    # 1..3 bytes: the first, the last and the middle one (n / 2).
    mov     %rdx, %r9
    shr     $1, %r9
    movzbl  (%rsi), %ecx
    movzbl  -1(%rsi,%rdx), %r8d
    movzbl  (%rsi,%r9), %r10d
    mov     %cl, (%rdi)
    mov     %r8b, -1(%rdi,%rdx)
    mov     %r10b, (%rdi,%r9)
.Lsealkit_mm_done:
    ret
    .size sealkit_memmove, .-sealkit_memmove
