import { describe, expect, it } from 'vitest'
import { activity, topFailing, totals, type SceneSeries } from '@/pages/dashboard/dashboard'

const zero = { reported: 0, merged: 0, replayed: 0, succeeded: 0, failed: 0, exhausted: 0, callbacks_succeeded: 0, callbacks_failed: 0, callbacks_exhausted: 0 }
function series(id: number, t: Partial<typeof zero>, points: { minute: string; reported?: number; failed?: number }[] = []): SceneSeries {
  return {
    scene_id: id, scene: `s${id}`, group_id: 1, group: 'g', namespace_id: 1,
    totals: { ...zero, ...t },
    points: points.map((p) => ({ ...zero, ...p })),
  }
}

describe('dashboard figures', () => {
  it('sums the scenes per minute and fills quiet minutes with zero', () => {
    const a = activity({
      from: '2026-12-02T10:00:00Z', until: '2026-12-02T10:04:00Z', resolution: 'minute',
      series: [
        series(1, {}, [{ minute: '2026-12-02T10:01:00Z', reported: 3, failed: 1 }]),
        series(2, {}, [{ minute: '2026-12-02T10:01:00Z', reported: 2 }, { minute: '2026-12-02T10:03:00Z', failed: 4 }]),
      ],
    })
    expect(a.t.length).toBe(4)
    expect(a.counts.reported).toEqual([0, 5, 0, 0])
    expect(a.counts.failed).toEqual([0, 1, 0, 4])
  })

  it('keeps a point past the range end', () => {
    const a = activity({
      from: '2026-12-02T10:00:00Z', until: '2026-12-02T10:02:00Z', resolution: 'minute',
      series: [series(1, {}, [{ minute: '2026-12-02T10:02:00Z', reported: 1 }])],
    })
    expect(a.counts.reported).toEqual([0, 0, 1])
  })

  it('adds totals and ranks the failing scenes', () => {
    const s = [series(1, { failed: 5 }), series(2, { exhausted: 1 }), series(3, {}), series(4, { failed: 9 })]
    expect(totals(s).failed).toBe(14)
    expect(topFailing(s).map((x) => x.scene_id)).toEqual([2, 4, 1])
    expect(topFailing(null)).toEqual([])
  })
})
