//! The debugger's terminal UI: an event list with a cursor, the detail and state panes, keys
//! to move, search, break and fork.
//!
//! Owns `App` (cursor, search, breakpoints, prompts, popups), its key handling and one
//! `draw` of a frame. Both are plain functions of the app, so tests drive keys and render
//! frames on ratatui's `TestBackend`; only `run` touches the real terminal. Every key costs at
//! most one pass over the events (search, breakpoints); drawing looks only at the visible
//! rows and the cursor's event. It never writes the history.

use super::model::{format_ms, Timeline};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;
use std::path::PathBuf;

/// Seeds the `f` key forks under: enough to see a distribution, quick enough to wait for.
pub(crate) const FORK_SEED_COUNT: u64 = 50;

/// What the bottom line is reading, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Prompt {
    Search(String),
    Kind(String),
    Breakpoint(String),
}

pub(crate) struct App {
    timeline: Timeline,
    /// The history's file, for forking (`None` in tests that do not fork).
    file: Option<PathBuf>,
    cursor: usize,
    /// First event shown in the list.
    top: usize,
    prompt: Option<Prompt>,
    search: Option<String>,
    /// Event kinds or activity types to stop at.
    breakpoints: Vec<String>,
    message: String,
    help: bool,
    /// The last fork's summary, shown until a key is pressed.
    fork_summary: Option<Vec<String>>,
    quit: bool,
}

const HELP: &[&str] = &[
    "j / Down      step forward        k / Up       step back",
    "PgDn / PgUp   20 events           g / G        start / end",
    "x / X         next / previous failure",
    "t             next event of a kind (type its name)",
    "/             search text         n / N        next / previous match",
    "b             toggle a breakpoint on an event kind or activity type",
    "c / C         continue to the next / previous breakpoint",
    "f             fork here: keep events up to the cursor, run 50 seeds on",
    "?             this help           q            quit",
];

impl App {
    pub(crate) fn new(timeline: Timeline, file: Option<PathBuf>) -> App {
        App {
            timeline,
            file,
            cursor: 0,
            top: 0,
            prompt: None,
            search: None,
            breakpoints: Vec::new(),
            message: "? for help, q to quit".to_owned(),
            help: false,
            fork_summary: None,
            quit: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    pub(crate) fn quit_requested(&self) -> bool {
        self.quit
    }

    fn last(&self) -> usize {
        self.timeline.len() - 1
    }

    /// The first event after (or before) the cursor for which `hit` holds.
    fn find(&self, forward: bool, hit: impl Fn(usize) -> bool) -> Option<usize> {
        if forward {
            (self.cursor + 1..self.timeline.len()).find(|i| hit(*i))
        } else {
            (0..self.cursor).rev().find(|i| hit(*i))
        }
    }

    fn jump(&mut self, found: Option<usize>, what: &str) {
        match found {
            Some(index) => {
                self.cursor = index;
                self.message = format!("{what}: event {index}");
            }
            None => self.message = format!("no {what} that way"),
        }
    }

    pub(crate) fn on_key(&mut self, key: KeyEvent) {
        if key.kind != KeyEventKind::Press {
            return;
        }
        if let Some(prompt) = self.prompt.take() {
            self.on_prompt_key(prompt, key);
            return;
        }
        if self.help || self.fork_summary.is_some() {
            self.help = false;
            self.fork_summary = None;
            if key.code != KeyCode::Char('q') {
                return;
            }
        }
        let last = self.last();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char('j') | KeyCode::Down => self.cursor = (self.cursor + 1).min(last),
            KeyCode::Char('k') | KeyCode::Up => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::PageDown => self.cursor = (self.cursor + 20).min(last),
            KeyCode::PageUp => self.cursor = self.cursor.saturating_sub(20),
            KeyCode::Char('g') | KeyCode::Home => self.cursor = 0,
            KeyCode::Char('G') | KeyCode::End => self.cursor = last,
            KeyCode::Char('x') => {
                let found = self.find(true, |i| self.timeline.event(i).kind.is_failure());
                self.jump(found, "failure");
            }
            KeyCode::Char('X') => {
                let found = self.find(false, |i| self.timeline.event(i).kind.is_failure());
                self.jump(found, "failure");
            }
            KeyCode::Char('t') => self.prompt = Some(Prompt::Kind(String::new())),
            KeyCode::Char('/') => self.prompt = Some(Prompt::Search(String::new())),
            KeyCode::Char('b') => self.prompt = Some(Prompt::Breakpoint(String::new())),
            KeyCode::Char('n') | KeyCode::Char('N') => self.search_again(key.code == KeyCode::Char('n')),
            KeyCode::Char('c') | KeyCode::Char('C') => self.continue_to_breakpoint(key.code == KeyCode::Char('c')),
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('f') => self.fork_here(),
            _ => {}
        }
    }

    fn on_prompt_key(&mut self, prompt: Prompt, key: KeyEvent) {
        let (mut text, make): (String, fn(String) -> Prompt) = match prompt {
            Prompt::Search(text) => (text, Prompt::Search),
            Prompt::Kind(text) => (text, Prompt::Kind),
            Prompt::Breakpoint(text) => (text, Prompt::Breakpoint),
        };
        match key.code {
            KeyCode::Esc => self.message = "canceled".to_owned(),
            KeyCode::Enter => self.submit(make(text)),
            KeyCode::Backspace => {
                text.pop();
                self.prompt = Some(make(text));
            }
            KeyCode::Char(c) => {
                text.push(c);
                self.prompt = Some(make(text));
            }
            _ => self.prompt = Some(make(text)),
        }
    }

    fn submit(&mut self, prompt: Prompt) {
        match prompt {
            Prompt::Search(text) if !text.is_empty() => {
                self.search = Some(text.to_lowercase());
                self.search_again(true);
            }
            Prompt::Kind(kind) if !kind.is_empty() => {
                let found = self.find(true, |i| self.timeline.is_of(i, &kind));
                self.jump(found, &kind);
            }
            Prompt::Breakpoint(name) if !name.is_empty() => {
                if let Some(at) = self.breakpoints.iter().position(|b| *b == name) {
                    self.breakpoints.remove(at);
                    self.message = format!("breakpoint on {name} removed");
                } else {
                    self.message = format!("breakpoint on {name}; c continues to it");
                    self.breakpoints.push(name);
                }
            }
            _ => self.message = "nothing entered".to_owned(),
        }
    }

    fn search_again(&mut self, forward: bool) {
        let Some(needle) = self.search.clone() else {
            self.message = "no search yet: / starts one".to_owned();
            return;
        };
        let found = self.find(forward, |i| self.timeline.matches(i, &needle));
        self.jump(found, &format!("match for {needle:?}"));
    }

    fn continue_to_breakpoint(&mut self, forward: bool) {
        if self.breakpoints.is_empty() {
            self.message = "no breakpoints: b sets one".to_owned();
            return;
        }
        let found = self.find(forward, |i| self.breakpoints.iter().any(|b| self.timeline.is_of(i, b)));
        self.jump(found, "breakpoint");
    }

    fn fork_here(&mut self) {
        let Some(file) = self.file.clone() else {
            self.message = "fork needs the history's file".to_owned();
            return;
        };
        let request = crate::fork::Request {
            history: &self.timeline.history,
            file: &file,
            at: self.cursor as u64 + 1,
            worlds: crate::fork::Worlds::Seeds { base: 0, count: FORK_SEED_COUNT },
            keep_histories: false,
        };
        match crate::fork::run(request) {
            Ok(summary) => {
                let mut text = Vec::new();
                crate::fork::write_summary(&summary, &mut text).expect("writing to memory");
                self.fork_summary = Some(String::from_utf8_lossy(&text).lines().map(str::to_owned).collect());
            }
            Err(error) => self.message = format!("cannot fork here: {error}"),
        }
    }

    /// Keeps the cursor's row inside a list of `rows` rows.
    fn scroll(&mut self, rows: usize) {
        let rows = rows.max(1);
        if self.cursor < self.top {
            self.top = self.cursor;
        } else if self.cursor >= self.top + rows {
            self.top = self.cursor + 1 - rows;
        }
    }

    pub(crate) fn draw(&mut self, frame: &mut Frame<'_>) {
        let [title, body, status] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        let history = &self.timeline.history;
        let title_text = format!(
            " tempest debug  {} ({})  run {}  {} events  breakpoints: {}",
            history.workflow_id,
            history.workflow_type,
            history.run_id,
            self.timeline.len(),
            if self.breakpoints.is_empty() { "none".to_owned() } else { self.breakpoints.join(", ") }
        );
        frame.render_widget(Paragraph::new(title_text).style(Style::new().add_modifier(Modifier::REVERSED)), title);
        let [list_area, right] =
            Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        let [detail_area, state_area] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(right);
        self.scroll(list_area.height.saturating_sub(2) as usize);
        self.draw_list(frame, list_area);
        let detail: Vec<Line<'_>> = self.timeline.detail_lines(self.cursor).into_iter().map(Line::from).collect();
        frame.render_widget(
            Paragraph::new(detail)
                .block(Block::new().borders(Borders::ALL).title(" event "))
                .wrap(Wrap { trim: false }),
            detail_area,
        );
        let state: Vec<Line<'_>> = self.timeline.state_lines(self.cursor).into_iter().map(Line::from).collect();
        frame.render_widget(
            Paragraph::new(state)
                .block(Block::new().borders(Borders::ALL).title(" run state "))
                .wrap(Wrap { trim: false }),
            state_area,
        );
        let status_text = match &self.prompt {
            Some(Prompt::Search(text)) => format!("/{text}"),
            Some(Prompt::Kind(text)) => format!("next event of kind or activity type: {text}"),
            Some(Prompt::Breakpoint(text)) => format!("breakpoint on event kind or activity type: {text}"),
            None => self.message.clone(),
        };
        frame.render_widget(Paragraph::new(status_text), status);
        if self.help {
            popup(frame, " keys ", HELP.iter().map(|l| (*l).to_owned()).collect());
        } else if let Some(summary) = &self.fork_summary {
            popup(frame, " fork here ", summary.clone());
        }
    }

    fn draw_list(&self, frame: &mut Frame<'_>, area: Rect) {
        let rows = area.height.saturating_sub(2) as usize;
        let end = (self.top + rows).min(self.timeline.len());
        let lines: Vec<Line<'_>> = (self.top..end)
            .map(|index| {
                let event = self.timeline.event(index);
                let marker = if self.breakpoints.iter().any(|b| self.timeline.is_of(index, b)) { "●" } else { " " };
                let text = format!("{marker}{:>5} {:>10} {}", index, format_ms(event.time_ms.as_ms()), event.kind);
                let mut style = Style::new();
                if event.kind.is_failure() {
                    style = style.fg(Color::Red);
                } else if event.kind.is_command() {
                    style = style.fg(Color::Cyan);
                }
                if index == self.cursor {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                Line::from(Span::styled(text, style))
            })
            .collect();
        let title = format!(" events {}/{} ", self.cursor, self.timeline.len() - 1);
        frame.render_widget(Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)), area);
    }
}

fn popup(frame: &mut Frame<'_>, title: &str, lines: Vec<String>) {
    let area = frame.area();
    let width = (lines.iter().map(|l| l.chars().count()).max().unwrap_or(10) as u16 + 4).min(area.width);
    // Long lines wrap inside the borders, so each takes as many rows as it needs.
    let inner = usize::from(width.saturating_sub(2).max(1));
    let rows: usize = lines.iter().map(|l| l.chars().count().max(1).div_ceil(inner)).sum();
    let height = (u16::try_from(rows).unwrap_or(u16::MAX).saturating_add(2)).min(area.height);
    let rect = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, rect);
    let text: Vec<Line<'_>> = lines.into_iter().map(Line::from).collect();
    frame.render_widget(
        Paragraph::new(text)
            .block(Block::new().borders(Borders::ALL).title(title.to_owned()))
            .wrap(Wrap { trim: false }),
        rect,
    );
}

/// Runs the UI on the real terminal until `q`; the terminal is restored on every way out.
pub(crate) fn run(mut app: App) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("the debugger needs a terminal; `tempest debug FILE --at N` prints event N as text");
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot open the terminal for the debugger: {e}"))?;
    let result = (|| -> anyhow::Result<()> {
        while !app.quit_requested() {
            terminal.draw(|frame| app.draw(frame))?;
            if let TermEvent::Key(key) = event::read()? {
                app.on_key(key);
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn app(len: usize) -> App {
        App::new(Timeline::new(crate::debug::tests::long_history(len)), None)
    }

    fn press(app: &mut App, keys: &str) {
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                c => KeyCode::Char(c),
            };
            app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
        }
    }

    fn frame(app: &mut App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| app.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            let row: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_owned()).collect();
            text.push_str(row.trim_end());
            text.push('\n');
        }
        text
    }

    #[test]
    fn first_frame_shows_list_detail_and_state() {
        let mut app = app(40);
        insta::assert_snapshot!("debug_first_frame", frame(&mut app, 140, 36));
    }

    #[test]
    fn next_failure_shows_its_classification_and_state() {
        let mut app = app(40);
        press(&mut app, "x");
        assert!(app.timeline.event(app.cursor()).kind.is_failure());
        insta::assert_snapshot!("debug_next_failure", frame(&mut app, 140, 36));
    }

    #[test]
    fn a_run_waiting_for_its_human_shows_the_awaited_signal() {
        let history = crate::debug::tests::recorded("human_approval", 3);
        let mut app = App::new(Timeline::new(history), None);
        press(&mut app, "ttimer_started\n");
        let text = frame(&mut app, 150, 40);
        // Asserted, not snapshotted: the recorded run changes whenever the simulator does.
        assert!(text.contains("awaited signals: approval"), "{text}");
        assert!(text.contains("timer_started") && text.contains(" fires at "), "{text}");
    }

    #[test]
    fn help_popup_lists_the_keys() {
        let mut app = app(10);
        press(&mut app, "?");
        let text = frame(&mut app, 120, 30);
        assert!(text.contains("continue to the next / previous breakpoint"), "{text}");
        insta::assert_snapshot!("debug_help", text);
    }

    #[test]
    fn keys_step_jump_search_and_break() {
        let mut app = app(300);
        press(&mut app, "jjj");
        assert_eq!(app.cursor(), 3);
        press(&mut app, "k");
        assert_eq!(app.cursor(), 2);
        press(&mut app, "G");
        assert_eq!(app.cursor(), 299);
        press(&mut app, "g");
        assert_eq!(app.cursor(), 0);
        press(&mut app, "/answer 7\n");
        let found = app.cursor();
        assert!(app.timeline.event(found).to_string().contains("answer 7"), "{}", app.timeline.event(found));
        press(&mut app, "n");
        assert!(app.cursor() > found && app.timeline.matches(app.cursor(), "answer 7"));
        press(&mut app, "g");
        press(&mut app, "tactivity_completed\n");
        assert_eq!(app.timeline.event(app.cursor()).kind.name(), "activity_completed");
        press(&mut app, "g");
        press(&mut app, "bllm_turn\n");
        press(&mut app, "c");
        let first = app.cursor();
        assert!(app.timeline.is_of(first, "llm_turn") && first > 0);
        press(&mut app, "c");
        assert!(app.cursor() > first && app.timeline.is_of(app.cursor(), "llm_turn"));
        press(&mut app, "C");
        assert_eq!(app.cursor(), first);
        press(&mut app, "q");
        assert!(app.quit_requested());
    }

    #[test]
    fn f_forks_at_the_cursor_and_shows_the_summary() {
        let history = crate::debug::tests::recorded("hello_llm", 1);
        let mut app = App::new(Timeline::new(history), Some(PathBuf::from("h.json")));
        press(&mut app, "jf");
        let text = frame(&mut app, 160, 30);
        assert!(text.contains(" fork here "), "{text}");
        assert!(text.contains("first 2 of"), "{text}");
        assert!(text.contains(&format!("continued in {FORK_SEED_COUNT} worlds")), "{text}");
        assert!(text.contains("checks: all passed"), "{text}");
        press(&mut app, "j");
        assert!(app.fork_summary.is_none(), "a key closes the summary");
        assert_eq!(app.cursor(), 1, "and does nothing else");
    }

    #[test]
    fn ten_thousand_events_open_and_scroll_to_the_end() {
        let mut app = app(10_000);
        press(&mut app, "G");
        let text = frame(&mut app, 140, 36);
        assert!(text.contains("events 9999/9999"), "{text}");
        assert!(text.contains("event 9999 of 10000"), "{text}");
    }
}
