//! Settings from `Env`: the worker's vars and secrets, read through `shared`'s [`Vars`]
//! (which knows every name, default and parse).

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use shared::wire::config::Vars;
use worker::Env;

/// The worker's vars and secrets.
pub struct EnvVars<'a>(pub &'a Env);

impl Vars for EnvVars<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|v| v.to_string())
    }
}

thread_local! {
    /// What [`per_isolate`] read, one value per type.
    static READ: RefCell<Vec<Rc<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// The value of type `T` of this isolate: `read` once, on first use (vars and secrets never
/// change within an isolate), then the same value for every request, batch and cron.
pub fn per_isolate<T: 'static>(read: impl FnOnce() -> T) -> Rc<T> {
    let found = READ.with(|values| {
        values
            .borrow()
            .iter()
            .find_map(|v| v.clone().downcast::<T>().ok())
    });
    if let Some(value) = found {
        return value;
    }
    let value = Rc::new(read());
    READ.with(|values| values.borrow_mut().push(value.clone()));
    value
}
